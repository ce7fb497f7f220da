"""Config keys of CondInst (``MODEL.CONDINST.*``; Tian et al., ECCV 2020, AdelaiDet defaults)."""

from detectron2.config import CfgNode as CN


def add_condinst_config(cfg: CN) -> None:
    """Add ``MODEL.CONDINST`` to ``cfg`` (in place). FCOS's keys come from instseg_d2.modeling."""
    _C = cfg
    _C.MODEL.CONDINST = CN()
    # Output stride of the instance masks: the dynamic head's stride-8 logits are upsampled
    # (aligned bilinear) to this stride, and the GT masks are sampled at it (4).
    _C.MODEL.CONDINST.MASK_OUT_STRIDE = 4
    # Training: at most this many FCOS positive locations (random subset, per worker) get a
    # mask loss (500 in the paper's configs; -1 = all).
    _C.MODEL.CONDINST.MAX_PROPOSALS = -1
    # Alternative to MAX_PROPOSALS (BoxInst): per image keep about TOPK / #GT positives of each
    # GT with the best sigmoid(cls) * sigmoid(ctr); -1 = off. The two are exclusive.
    _C.MODEL.CONDINST.TOPK_PROPOSALS_PER_IM = -1

    # Dynamic mask head: NUM_LAYERS 1x1 convs of CHANNELS channels whose filters theta_{x,y}
    # come from the controller (3 layers of 8: 169 parameters per instance).
    _C.MODEL.CONDINST.MASK_HEAD = CN()
    _C.MODEL.CONDINST.MASK_HEAD.CHANNELS = 8
    _C.MODEL.CONDINST.MASK_HEAD.NUM_LAYERS = 3
    # Relative coordinates (instance location - pixel) / size of interest as 2 extra inputs
    # (paper Table 3: 35.7 with vs 31.4 AP without).
    _C.MODEL.CONDINST.MASK_HEAD.DISABLE_REL_COORDS = False

    # Mask branch F_mask: refine P3-P5 to CHANNELS, sum at P3's stride, NUM_CONVS convs, then a
    # 1x1 conv to OUT_CHANNELS (C_mask = 8).
    _C.MODEL.CONDINST.MASK_BRANCH = CN()
    _C.MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS = 8
    _C.MODEL.CONDINST.MASK_BRANCH.IN_FEATURES = ["p3", "p4", "p5"]
    _C.MODEL.CONDINST.MASK_BRANCH.CHANNELS = 128
    _C.MODEL.CONDINST.MASK_BRANCH.NORM = "BN"
    _C.MODEL.CONDINST.MASK_BRANCH.NUM_CONVS = 4
    # Auxiliary semantic segmentation loss on P3 (focal loss; "w/ sem." in the paper, +1 AP).
    _C.MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON = False
