"""Config keys of BlendMask (Chen et al., CVPR 2020; AdelaiDet defaults)."""

from detectron2.config import CfgNode as CN


def add_blendmask_config(cfg: CN) -> None:
    """Add ``MODEL.BLENDMASK`` (blender, top layer) and ``MODEL.BASIS_MODULE`` (bottom module)
    to ``cfg`` (in place). FCOS's keys come from instseg_d2.modeling."""
    _C = cfg
    _C.MODEL.BLENDMASK = CN()
    # M: side of the attention maps predicted per location by the top layer (K*M*M channels:
    # 4*14*14 = 784).
    _C.MODEL.BLENDMASK.ATTN_SIZE = 14
    # How the M x M attentions are resized to R x R before the softmax over bases.
    _C.MODEL.BLENDMASK.TOP_INTERP = "bilinear"
    # R: resolution of the bases cropped per instance (RoIAlign) and of the output masks (56).
    _C.MODEL.BLENDMASK.BOTTOM_RESOLUTION = 56
    _C.MODEL.BLENDMASK.POOLER_TYPE = "ROIAlignV2"
    _C.MODEL.BLENDMASK.POOLER_SAMPLING_RATIO = 1
    # 1 / stride of the bases.
    _C.MODEL.BLENDMASK.POOLER_SCALES = (0.25,)
    # Weight of the blended-mask loss.
    _C.MODEL.BLENDMASK.INSTANCE_LOSS_WEIGHT = 1.0

    _C.MODEL.BASIS_MODULE = CN()
    # K: number of bases (4).
    _C.MODEL.BASIS_MODULE.NUM_BASES = 4
    # Bottom module (ProtoNet-like, on FPN features): refine each of IN_FEATURES to CONVS_DIM,
    # sum at P3, NUM_CONVS convs, x2 upsample, one conv, 1x1 conv to K bases at stride 4.
    _C.MODEL.BASIS_MODULE.IN_FEATURES = ["p3", "p4", "p5"]
    _C.MODEL.BASIS_MODULE.CONVS_DIM = 128
    _C.MODEL.BASIS_MODULE.NUM_CONVS = 3
    _C.MODEL.BASIS_MODULE.NORM = "SyncBN"
    # Auxiliary semantic segmentation on P3 (cross-entropy over NUM_CLASSES + 1 labels at
    # COMMON_STRIDE, weight 0.3). The targets are computed on the fly from the instance masks.
    _C.MODEL.BASIS_MODULE.LOSS_ON = False
    _C.MODEL.BASIS_MODULE.NUM_CLASSES = 80
    _C.MODEL.BASIS_MODULE.COMMON_STRIDE = 8
    _C.MODEL.BASIS_MODULE.LOSS_WEIGHT = 0.3
