"""Config keys of SOLO, Decoupled SOLO and SOLOv2 (``MODEL.SOLO.*``).

Defaults are the reference values: AdelaiDet's ``MODEL.SOLOV2.*`` for SOLOv2 and the mmdet
configs of WXinlong/SOLO (``solo_r50_fpn_8gpu_1x.py``) for SOLO / Decoupled SOLO, which share
every value except the instance-branch width and depth (set in their yaml files).
"""

from detectron2.config import CfgNode as CN


def add_solo_config(cfg: CN) -> None:
    """Add the ``MODEL.SOLO`` keys to ``cfg`` (in place)."""
    cfg.MODEL.SOLO = CN()
    s = cfg.MODEL.SOLO
    # Head variant, a name in solo_d2's SOLO_HEAD_REGISTRY: "SOLOHead" (vanilla SOLO, S^2 mask
    # channels per level), "DecoupledSOLOHead" (x and y branches of S channels) or "SOLOv2Head"
    # (dynamic kernels + unified mask features).
    s.HEAD_NAME = "SOLOv2Head"
    # Number of object classes C (set from the training set by the platform).
    s.NUM_CLASSES = 80

    # ---- levels and grid assignment (shared by the three heads)
    # FPN levels of the instance (category/mask-kernel) branch, high to low resolution. The
    # first is downsampled x0.5 and the last resized to the previous level's size, so that
    # their strides become FPN_INSTANCE_STRIDES.
    s.INSTANCE_IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    # Effective stride of each instance level after that re-scaling (paper: 8, 8, 16, 32, 32).
    s.FPN_INSTANCE_STRIDES = [8, 8, 16, 32, 32]
    # Range of sqrt(box area) (pixels of the network input) assigned to each level; the ranges
    # overlap, so an instance can be positive at two levels (paper: (1,96) ... (384,2048)).
    s.FPN_SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
    # Grid number S of each level: the image is divided into S x S cells (paper: 40 ... 12).
    s.NUM_GRIDS = [40, 36, 24, 16, 12]
    # Centre-region scale epsilon (paper "sigma" 0.2): cells within the centre of mass +- 0.5 *
    # sigma * box size (and within the centre's 3x3 neighbourhood) are positive.
    s.SIGMA = 0.2
    # Target rules. "paper": a cell belongs to one instance (the later in annotation order takes
    # its class and mask, as mmdet SOLO) and mask targets are the padded GT masks resampled
    # exactly x1/4. "reference": AdelaiDet's SOLOv2 (SOLOv2Head only): the later instance takes
    # the cell's class but each instance keeps the cell as a positive of its own mask (two
    # targets for a shared cell), and masks are rescaled by cv2 to (int(h/4 + .5), int(w/4 + .5))
    # and zero-padded. See solo_d2/reference_rules.py.
    s.TARGET_RULES = "paper"

    # ---- heads
    # Width of the instance branches (mask / kernel / category towers). SOLOv2: 512;
    # SOLO and Decoupled SOLO: 256 (mmdet "seg_feat_channels").
    s.INSTANCE_CHANNELS = 512
    # Number of 3x3 convs in each instance tower. SOLOv2: 4; SOLO and Decoupled SOLO: 7.
    s.NUM_INSTANCE_CONVS = 4
    # Norm of the head convs ("GN": 32 groups, as the references; "" for none).
    s.NORM = "GN"
    # CoordConv: append normalised (x, y) coordinates to the mask/kernel branch input
    # (Decoupled SOLO: x to the x branch, y to the y branch).
    s.USE_COORD_CONV = True
    # Prior probability for the initial bias of the category predictor (focal-loss init).
    s.PRIOR_PROB = 0.01
    # Initial probability of the SOLO / Decoupled SOLO mask predictors (each of the x and y
    # predictors for Decoupled SOLO). The references use 0.01, where the sigmoid's slope is 25x
    # smaller than at 0.5: their mask branch starts on a long plateau (12-36 COCO epochs absorb
    # it). SOLOv2's dynamic masks start near 0.5 whatever this value.
    s.MASK_PRIOR_PROB = 0.01
    # SOLOv2 mask-feature branch: FPN levels fused at stride 4 (the last gets coordinates),
    # their width, and E, the number of mask-feature channels (= length of each dynamic 1x1
    # kernel; AdelaiDet's NUM_KERNELS and NUM_MASKS, which must be equal).
    s.MASK_IN_FEATURES = ["p2", "p3", "p4", "p5"]
    s.MASK_CHANNELS = 128
    s.NUM_MASKS = 256

    # ---- inference
    # Window of the point NMS on the category scores (reference: 2, a 2x2 max-pool).
    s.POINT_NMS_KERNEL = 2
    # Category score threshold for candidate (cell, class) pairs.
    s.SCORE_THR = 0.1
    # Mask probability threshold (binarisation, maskness and the final masks).
    s.MASK_THR = 0.5
    # A candidate is dropped unless its binary mask at stride 4 has more than this many pixels,
    # per level. The reference compares with the level's stride: [8, 8, 16, 32, 32].
    s.MIN_MASK_AREAS = [8, 8, 16, 32, 32]
    # Candidates kept (by maskness-rescored score) before Matrix NMS.
    s.NMS_PRE = 500
    # Matrix NMS kernel, "gaussian" or "linear", and the gaussian's sigma (paper: 2.0).
    s.NMS_KERNEL = "gaussian"
    s.NMS_SIGMA = 2.0
    # Decayed scores below this are removed after Matrix NMS.
    s.UPDATE_THR = 0.05
    # Detections kept per image: TEST.DETECTIONS_PER_IMAGE (100), the one cap of every method.
    cfg.register_renamed_key("MODEL.SOLO.MAX_PER_IMG", "TEST.DETECTIONS_PER_IMAGE")

    # ---- losses
    s.LOSS = CN()
    # Category branch: sigmoid focal loss (alpha, gamma) summed over all cells of all levels,
    # divided by (number of positive cells + 1), times FOCAL_WEIGHT.
    s.LOSS.FOCAL_ALPHA = 0.25
    s.LOSS.FOCAL_GAMMA = 2.0
    s.LOSS.FOCAL_WEIGHT = 1.0
    # Mask branch: dice loss averaged over positive cells, times lambda (paper: 3).
    s.LOSS.DICE_WEIGHT = 3.0
    # Dice smoothing: the references add 0.001 to each of the two sums of squares.
    s.LOSS.DICE_EPS = 0.002
