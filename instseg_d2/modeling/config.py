"""Config keys of the shared models: FCOS and its P3-P7 backbone (``MODEL.FCOS.*``)."""

from detectron2.config import CfgNode as CN


def add_fcos_config(cfg: CN) -> None:
    """Add ``MODEL.FCOS`` (Tian et al., ICCV 2019; defaults of AdelaiDet) to ``cfg``."""
    _C = cfg
    _C.MODEL.FCOS = CN()
    # C: number of foreground classes; set from the training set by the platform.
    _C.MODEL.FCOS.NUM_CLASSES = 80
    # FPN levels the head runs on and their strides s_l (P3-P7: 8 ... 128).
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    _C.MODEL.FCOS.FPN_STRIDES = [8, 16, 32, 64, 128]
    # Extra levels on top of P5 built by build_fcos_resnet_fpn_backbone: 2 = P6 and P7
    # (P6 = conv3x3/2(P5), P7 = conv3x3/2(relu(P6))), 1 = P6 only, 0 = none.
    _C.MODEL.FCOS.TOP_LEVELS = 2
    # Towers: number of conv3x3 + norm + ReLU layers of the shared (before the split),
    # classification and box towers (paper: 0 / 4 / 4).
    _C.MODEL.FCOS.NUM_SHARE_CONVS = 0
    _C.MODEL.FCOS.NUM_CLS_CONVS = 4
    _C.MODEL.FCOS.NUM_BOX_CONVS = 4
    # Norm of the tower convs: "GN" (GroupNorm, 32 groups), "BN"/"SyncBN" (one per FPN level,
    # as AdelaiDet) or "none".
    _C.MODEL.FCOS.NORM = "GN"
    # Learnable per-level scalar s_l on the regression output: relu(s_l * bbox_pred(x)).
    _C.MODEL.FCOS.USE_SCALE = True
    # Initial bias of bbox_pred (distances in strides; reference: 0). Through the ReLU, a location
    # predicting zero width or height gets no GIoU gradient; a positive bias (the shapes BlendMask
    # config: 1.0) starts every location with a box, so no positive is dead at initialisation.
    # With 0, small objects can make the whole regression collapse (projects/FCOS/NOTES.md).
    _C.MODEL.FCOS.BBOX_PRED_BIAS_INIT = 0.0
    # pi: prior probability of the classification bias, b = -log((1 - pi) / pi).
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    # m_2..m_5 (paper): size ranges [0, 64], [64, 128], [128, 256], [256, 512], [512, inf] of
    # max(l*, t*, r*, b*) per level. Also the normaliser of CondInst's relative coordinates.
    _C.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]
    # Centre sampling: only locations within POS_RADIUS * s_l of the object's centre (and in
    # its box) are positive (radius 1.5).
    _C.MODEL.FCOS.CENTER_SAMPLE = True
    _C.MODEL.FCOS.POS_RADIUS = 1.5
    # Which centre: "mask" = centre of mass of the instance mask when the instances carry
    # gt_masks (CondInst), else the box centre; "box" = always the box centre (FCOS, BlendMask).
    _C.MODEL.FCOS.CENTER_SAMPLE_MODE = "mask"
    # Focal loss alpha / gamma (0.25 / 2.0).
    _C.MODEL.FCOS.LOSS_ALPHA = 0.25
    _C.MODEL.FCOS.LOSS_GAMMA = 2.0
    # Normaliser of the classification loss: "fg" = number of positives (averaged over
    # workers), "moving_fg" = its moving average (momentum 0.9), "all" = number of locations.
    _C.MODEL.FCOS.LOSS_NORMALIZER_CLS = "fg"
    _C.MODEL.FCOS.LOSS_WEIGHT_CLS = 1.0
    # Box quality branch (on the box tower): "ctrness" (centre-ness target, GIoU loss weighted
    # by it) or "iou" (predicts the IoU of the regressed box).
    _C.MODEL.FCOS.BOX_QUALITY = "ctrness"
    # Regression loss: "giou" (1 - GIoU), "iou" (-log IoU) or "linear_iou" (1 - IoU).
    _C.MODEL.FCOS.LOC_LOSS_TYPE = "giou"
    # Inference: score threshold 0.05, top 1000 candidates per level, class-aware NMS at 0.6,
    # top TEST.DETECTIONS_PER_IMAGE (100) per image. THRESH_WITH_CTR multiplies the classification score by centre-ness
    # before the threshold (CondInst, BlendMask) instead of after it (FCOS).
    _C.MODEL.FCOS.INFERENCE_TH_TEST = 0.05
    _C.MODEL.FCOS.PRE_NMS_TOPK_TEST = 1000
    _C.MODEL.FCOS.NMS_TH = 0.6
    _C.register_renamed_key("MODEL.FCOS.POST_NMS_TOPK_TEST", "TEST.DETECTIONS_PER_IMAGE")
    _C.MODEL.FCOS.THRESH_WITH_CTR = False
