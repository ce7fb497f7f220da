"""Config keys of Mask Transfiner (Ke et al., CVPR 2022).

The reference implementation (SysCV/transfiner, a fork of detectron2 v0.5) hard-codes every one
of these constants in ``mask_head.py`` / ``poolers.py``; here each is a key under
``MODEL.TRANSFINER`` with the reference value as default. The rest of the model is detectron2's
Mask R-CNN (``MODEL.ROI_MASK_HEAD.*``: ``CONV_DIM`` 256, ``NUM_CONV`` 4, ``POOLER_RESOLUTION``
14, so the coarse mask is 28 x 28).
"""

from detectron2.config import CfgNode as CN


def add_transfiner_config(cfg: CN) -> None:
    """Add the ``MODEL.TRANSFINER`` keys to ``cfg`` (in place)."""
    T = cfg.MODEL.TRANSFINER = CN()

    # ---- Semantic refinement of the finest FPN level (P2) before the hi-res RoI pooling:
    # P2' = P2 + f(P2), f = this many 3x3 convs (ReLU between); a 1x1 conv on f(P2) predicts
    # the foreground (union of all instances) for the semantic loss. Reference: 4.
    T.SEMANTIC_NUM_CONVS = 4

    # ---- Incoherence branch (detector of incoherent regions, paper Sec. 3.2): 3x3 convs on
    # RoI features + mask-branch features, then a 2x deconv and a 1x1 conv -> sigmoid, at the
    # coarse mask size (28 x 28). Output widths of the convs; reference (256, 256, 256, 128).
    T.INCOHERENT_CONV_DIMS = [256, 256, 256, 128]

    # ---- Incoherent-region ground truth (paper Eq. 1): a pixel is incoherent where the GT mask
    # M differs from up(down(M)); |M - up(down(M))| is taken down again to 1/s resolution and set
    # to 1 where >= eps, then RoIAligned to the coarse mask size and thresholded.
    T.INCOHERENT_GT_DOWNSAMPLE = 2  # s; reference 2
    T.INCOHERENT_GT_EPS = 0.01  # reference 0.01
    T.INCOHERENT_ROI_THRESH = 0.05  # reference 0.05
    # Width (pixels inside and outside) of the contour of the 28 x 28 GT mask that the
    # auxiliary boundary branch predicts: cross-shaped dilation XOR erosion. Reference 1.
    T.BOUNDARY_WIDTH = 1

    # ---- Quadtree (paper Sec. 3.3). Level l has (28 * 2^l)^2 cells: 28, 56, 112 for depth 3.
    T.QUADTREE_DEPTH = 3  # reference 3 (output 112 x 112); paper Table 5
    # Level l's node features are RoIAligned from FPN level k - offset[l] (k: the level of the
    # 14 x 14 RoI features, FPN Eq. 1), clamped at the finest level. Reference (1, 2, 3).
    T.NODE_LEVEL_OFFSETS = [1, 2, 3]
    # Training: a cell of level 0 is a node if its predicted incoherence >= thresh[0]; a cell of
    # level l > 0 if the nearest-upsampled incoherence >= thresh[l] (children of incoherent
    # nodes). Reference (0.125, 0.5, 0.5).
    T.TRAIN_INCOHERENT_THRESH = [0.125, 0.5, 0.5]
    # Inference thresholds; reference (1e-6, 0.125, 0.8): every level-0 cell is refined.
    T.TEST_INCOHERENT_THRESH = [1e-6, 0.125, 0.8]
    # Training: nodes sampled per level (randomly, cycling when fewer); reference 150.
    T.TRAIN_NODES_PER_LEVEL = 150
    # Training: an instance with fewer nodes than this at any level is not refined; ref. 10.
    T.TRAIN_MIN_NODES = 10
    # Instances refined per image: the first fg proposals (training) / the top-scoring
    # detections (inference). The reference refines the first 30 / 10 RoIs of the whole batch
    # (at inference, batch 1: the 10 top-scoring detections of the image). The other
    # detections keep their coarse mask, bilinearly upsampled. 100 (= TEST.DETECTIONS_PER_IMAGE)
    # refines every kept detection.
    T.TRAIN_MAX_INSTANCES = 30
    T.TEST_MAX_INSTANCES = 10  # reference 10
    # Inference: at most this many instances of similar token counts per transformer call
    # (bounds memory; does not change the output).
    T.TEST_CHUNK_SIZE = 10

    # ---- Refinement transformer (paper Sec. 3.4): post-norm encoder over the 14 x 14 context
    # tokens + the quadtree nodes; queries/keys get a sine position embedding.
    T.DIM = 256  # d_model; reference 256
    T.NHEADS = 4  # H; reference 4 (paper Table 6)
    T.FFN_DIM = 2048  # reference 2048
    T.NUM_LAYERS = 3  # D; reference 3 (paper Table 6)
    T.DROPOUT = 0.1  # residual and feed-forward dropout; reference 0.1
    # dropout on the attention weights; reference 0.1 (nn.MultiheadAttention(dropout=0.1)).
    # Above 0 the attention cannot use the fused kernels (the T x T weights are materialised).
    T.ATTN_DROPOUT = 0.1
    T.POS_TEMPERATURE = 10000.0  # sine position embedding temperature; reference 10000

    # ---- Loss weights (all on positive proposals; the semantic loss on whole images).
    T.MASK_LOSS_WEIGHT = 1.0  # BCE of the coarse 28 x 28 mask; reference 1.0
    T.INCOHERENT_LOSS_WEIGHT = 0.5  # dice + BCE of the incoherence map; reference 0.5
    T.INCOHERENT_DICE_SMOOTH = 1.0  # +1 in numerator and denominator of that dice; ref. 1
    T.REFINE_LOSS_WEIGHT = 1.0  # L1 of the refined node/context labels; reference 1.0
    T.SEMANTIC_LOSS_WEIGHT = 0.25  # BCE of the P2 foreground map; reference 0.25
    # BCE of the boundary map. The reference computes 0.5 * JointLoss(BceLoss, BceLoss), i.e.
    # 0.5 * (BCE + BCE) = 1.0 * BCE.
    T.BOUNDARY_LOSS_WEIGHT = 1.0
