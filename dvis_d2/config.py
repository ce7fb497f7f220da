"""Config keys of DVIS (Yuan, Chen, Li, "Deep Variational Instance Segmentation", NeurIPS 2020).

Every constant of the paper is a key here, with the paper's symbol and value in its comment. Where
the paper is silent, the research code's value (jia2lin3yuan1/2020-instanceSeg) is used and the
comment says so; projects/DVIS/README.md lists these choices.
"""

from detectron2.config import CfgNode as CN


def add_dvis_config(cfg: CN) -> None:
    """Add the ``MODEL.DVIS`` keys to ``cfg`` (in place)."""
    cfg.MODEL.DVIS = CN()
    # Number of thing classes (set from the training set by the platform).
    cfg.MODEL.DVIS.NUM_CLASSES = 80
    # Backbone feature the label FCN and the verification RoIAlign read: P3 (stride 8) of the
    # FPN top-down decoder, as the research code (the paper: a stride-8 ResNet + FPN-like decoder).
    cfg.MODEL.DVIS.IN_FEATURE = "p3"

    # ---- Label FCN head: convs on P3, bilinear x2 (stride 4), conv, 1x1 conv -> 1 channel, ReLU.
    cfg.MODEL.DVIS.HEAD = CN()
    cfg.MODEL.DVIS.HEAD.CONV_DIM = 256  # research code: 256
    cfg.MODEL.DVIS.HEAD.NUM_CONVS = 3  # 3x3 convs before the x2 upsampling (research code: 3)
    # Norm of the head convs (paper silent; the research code has none but trains at LR 1e-4 from
    # pretrained weights). GroupNorm keeps the from-scratch training at the common LR stable.
    cfg.MODEL.DVIS.HEAD.NORM = "GN"

    # ---- Variational loss (paper eq. 2-7).
    cfg.MODEL.DVIS.LOSS = CN()
    cfg.MODEL.DVIS.LOSS.HUBER_THETA = 0.1  # theta of the Huber loss L_h (paper: 0.1)
    cfg.MODEL.DVIS.LOSS.BINARY_WEIGHT = 10.0  # weight of L_b (paper silent; research code 10)
    cfg.MODEL.DVIS.LOSS.BINARY_MARGIN = 2.0  # m1 of eq. 3 (paper: 2; research code: 1)
    # Per-pixel weight of L_b: clip(cbrt(HW / (area + 1)), 1, max) for the pixels of each
    # instance (and of the background), as the research code. 1.0 gives uniform weights.
    cfg.MODEL.DVIS.LOSS.SIZE_WEIGHT_MAX = 10.0
    cfg.MODEL.DVIS.LOSS.PI_WEIGHT = 0.2  # weight of L_pi (paper silent; research code 0.2)
    cfg.MODEL.DVIS.LOSS.PI_MARGIN = 1.0  # m2 of eq. 5 (paper: 1)
    # Weight of different-instance pairs relative to same-instance pairs (research code: 3).
    cfg.MODEL.DVIS.LOSS.PI_DIFF_WEIGHT = 3.0
    # Pixel-pair sampling: "stratified" (paper's base setting) or "random".
    cfg.MODEL.DVIS.LOSS.PI_SAMPLING = "stratified"
    # Stratified sampling, in label-map (stride-4) pixels: window w, dense centre c, dilation r
    # (paper: w = 129, c = 8, r = 8). Offsets with |dy| + |dx| <= c, plus every r-th row and column
    # out to the window.
    cfg.MODEL.DVIS.LOSS.PI_WINDOW = 129
    cfg.MODEL.DVIS.LOSS.PI_CENTER = 8
    cfg.MODEL.DVIS.LOSS.PI_DILATION = 8
    # Random sampling: pixels drawn per image among the instance pixels; all pairs among them.
    cfg.MODEL.DVIS.LOSS.PI_RANDOM_PIXELS = 1024
    # Pairs only on instance pixels (paper). True: background is one more "instance" (research);
    # with PI_PAIRS "reference": background pixels are pair centres too (research: pi_hasBG 1).
    cfg.MODEL.DVIS.LOSS.PI_INCLUDE_BACKGROUND = False
    # Pixel pairs of L_pi (eq. 4-5: the sum over pairs (p1, p2) of L_h(|f(p1) - f(p2)|) or
    # L_h(ReLU(m2 - |f(p1) - f(p2)|))).
    # "foreground" (paper; default): pairs whose two pixels both lie on instances (both valid
    #   pixels with PI_INCLUDE_BACKGROUND), each unordered pair once, inside the image; mean over
    #   the pairs.
    # "reference": the research code's pairs (its dilated-conv L_pi): every centre pixel on an
    #   instance (every pixel with PI_INCLUDE_BACKGROUND, the research default) paired with the
    #   pixel at each offset of its kernel, background or not; past the image border, the border
    #   pixel; kernel: |dy| + |dx| < PI_CENTER, dy and dx multiples of PI_DILATION, and the whole
    #   row and column through the centre, out to PI_WINDOW // 2; |f(p1) - f(p2)| clamped to
    #   [1e-8, 5]; mean over centres x offsets. The background and border partners change the
    #   term's scale (on the test's hand-checked row, "foreground" is 8/3 of it).
    #   PI_SAMPLING "stratified" only.
    cfg.MODEL.DVIS.LOSS.PI_PAIRS = "foreground"
    cfg.MODEL.DVIS.LOSS.MS_WEIGHT = 0.1  # Mumford-Shah (Cauchy, eq. 7) weight (research code 0.1)
    # Normalisation of the Mumford-Shah term (eq. 7: the sum over pixels of
    # log(|grad f|^2 + 1), forward differences).
    # "all_pixels" (default): the mean over all pixels.
    # "nonzero": the research code's mean over the non-zero terms only (the pixels where f
    #   changes; first row and column left out, as its unpadded difference kernels): larger by
    #   (all pixels / changing pixels), the more so the flatter the map (25/7 on the test's 6 x 6
    #   map with one block).
    cfg.MODEL.DVIS.LOSS.MS_NORMALIZATION = "all_pixels"
    cfg.MODEL.DVIS.LOSS.QUANT_WEIGHT = 0.5  # quantization |f - round(f)| weight (research 0.5)

    # ---- Discretization: mean-shift on the label values, connected components, filters.
    cfg.MODEL.DVIS.MEANSHIFT = CN()
    cfg.MODEL.DVIS.MEANSHIFT.BANDWIDTHS = (0.9, 0.4)  # paper: 0.9 and 0.4
    # Range kernel: Gaussian of sigma = h / 3 truncated at h (research code's sigma). Values are
    # binned at BIN_FRACTION * h for the mean-shift (each bin = its values' mean and count).
    cfg.MODEL.DVIS.MEANSHIFT.BIN_FRACTION = 0.05
    cfg.MODEL.DVIS.MEANSHIFT.MAX_VALUE = 64.0  # label values are clamped to [0, MAX_VALUE]
    cfg.MODEL.DVIS.MEANSHIFT.MAX_ITERS = 50  # stops earlier when no mode moves by 1e-3 h
    # A pixel is foreground when its mode is >= this (m1 / 2: halfway between 0 and m1).
    cfg.MODEL.DVIS.MEANSHIFT.FG_THRESH = 1.0
    # Per bandwidth: minimum segment area (label-map pixels) and number of segments kept
    # (largest first). Research code: bandwidth 0.9 -> 20 px, 20 kept; 0.4 -> 5 px, 40 kept.
    cfg.MODEL.DVIS.MEANSHIFT.MIN_AREA = (20, 5)
    cfg.MODEL.DVIS.MEANSHIFT.NUM_KEEP = (20, 40)
    # Thin/irregular segments are dropped: perimeter > PERIMETER_MIN and area / perimeter <
    # AREA_PERIMETER_RATIO (research code: 15 and 1.8). Ratio 0 disables the filter.
    cfg.MODEL.DVIS.MEANSHIFT.PERIMETER_MIN = 15
    cfg.MODEL.DVIS.MEANSHIFT.AREA_PERIMETER_RATIO = 1.8
    # Also propose the union of the disconnected segments of one mean-shift cluster (one
    # occluded object in pieces), next to the pieces themselves, as the research code.
    cfg.MODEL.DVIS.MEANSHIFT.MERGE_DISCONNECTED = True
    # A candidate whose mask IoU with an earlier one (e.g. of the other bandwidth) reaches
    # this is a duplicate and dropped.
    cfg.MODEL.DVIS.MEANSHIFT.DEDUP_IOU = 0.9

    # ---- Verification: RoIAlign on each candidate's box + its mask -> small CNN -> class, IoU.
    cfg.MODEL.DVIS.VERIFY = CN()
    cfg.MODEL.DVIS.VERIFY.ROI_SIZE = 14  # research code: 14
    cfg.MODEL.DVIS.VERIFY.CONV_DIM = 256  # conv widths CONV_DIM x3, then 2 * CONV_DIM x2
    cfg.MODEL.DVIS.VERIFY.FC_DIM = 1024  # research code: 1024
    # Norm of the verification convs (paper silent; the research code puts one BN on the pooled
    # features). GroupNorm keeps this head stable with few candidates per batch.
    cfg.MODEL.DVIS.VERIFY.NORM = "GN"
    cfg.MODEL.DVIS.VERIFY.BOX_EXTEND = 0.2  # box enlarged by 20% around its centre (research)
    # Target of a candidate = the GT with the highest mask IoU: class of that GT when IoU >=
    # IOU_HIGH, background when IoU < IOU_LOW, ignored by the classifier in between
    # (research code: 0.2 / 0.1). The IoU head regresses that IoU for every candidate.
    cfg.MODEL.DVIS.VERIFY.IOU_HIGH = 0.2
    cfg.MODEL.DVIS.VERIFY.IOU_LOW = 0.1
    cfg.MODEL.DVIS.VERIFY.CLS_WEIGHT = 1.0
    cfg.MODEL.DVIS.VERIFY.IOU_WEIGHT = 1.0
    # Add the ground-truth masks to the training candidates (paper silent; keeps the classifier
    # fed while the label map is still poor, like GT boxes among Mask R-CNN's proposals).
    cfg.MODEL.DVIS.VERIFY.ADD_GT_CANDIDATES = True
    # ... from this iteration on (0: from the first; the verifier then trains on perfect
    # candidates while the label map is still noise). A warm-up lets the variational loss shape
    # the label map before the verification losses reach the shared features in earnest.
    cfg.MODEL.DVIS.VERIFY.GT_CANDIDATES_START_ITER = 0
    # Verification reads the P3 features detached: its losses train the verification head only,
    # not the backbone the label FCN shares (paper silent; False trains both end to end).
    cfg.MODEL.DVIS.VERIFY.DETACH_FEATURES = False
    # COCO score = w * class confidence + (1 - w) * predicted IoU (paper: "weighted sum").
    cfg.MODEL.DVIS.VERIFY.SCORE_CLS_WEIGHT = 0.5
    cfg.MODEL.DVIS.VERIFY.SCORE_THRESH = 0.05
    # At most TEST.DETECTIONS_PER_IMAGE (100) detections per image.
