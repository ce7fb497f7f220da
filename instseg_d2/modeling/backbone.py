"""ResNet-FPN with P3-P7 (or P3-P6, P3-P5) for FCOS and the methods built on it."""

import fvcore.nn.weight_init as weight_init
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import FPN, build_resnet_backbone
from detectron2.modeling.backbone.build import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from torch import nn


class LastLevelP6(nn.Module):
    """P6 = conv3x3 stride 2 of P5 (FCOS with ``TOP_LEVELS 1``)."""

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5"):
        super().__init__()
        self.num_levels = 1
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        weight_init.c2_xavier_fill(self.p6)

    def forward(self, x):
        return [self.p6(x)]


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FPN on ``MODEL.FPN.IN_FEATURES`` (res3-res5) + ``MODEL.FCOS.TOP_LEVELS`` extra
    levels computed from P5 (not C5, unlike RetinaNet): P3-P7 at strides 8-128."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    top_levels = cfg.MODEL.FCOS.TOP_LEVELS
    if top_levels == 2:
        top_block = LastLevelP6P7(out_channels, out_channels, "p5")
    elif top_levels == 1:
        top_block = LastLevelP6(out_channels, out_channels, "p5")
    elif top_levels == 0:
        top_block = None
    else:
        raise ValueError(f"MODEL.FCOS.TOP_LEVELS must be 0, 1 or 2, got {top_levels!r}")
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
