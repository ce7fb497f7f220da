"""ResNet-FPN backbone that also returns the low-level features of MaskLab's hypercolumn.

detectron2's FPN returns only its pyramid; MaskLab's refinement also needs "conv1" (the first
7x7 conv + ReLU, stride 2, before the max pool) and "res2". This backbone runs detectron2's ResNet
and FPN modules unchanged (same parameters) and returns both. Its parameters are stored as
``bottom_up.*`` (as detectron2's) and ``fpn.*``; a detectron2 ResNet-FPN checkpoint (e.g. of the
Mask R-CNN baseline, whose FPN convs are at the backbone's top level) loads into it through the
converter of :mod:`masklab_d2.checkpoint`.
"""

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicStem, ResNet, build_resnet_backbone


class _GivenFeatures(Backbone):
    """Bottom-up "network" of an FPN fed with already computed bottom-up features."""

    def __init__(self, shapes: Dict[str, ShapeSpec]):
        super().__init__()
        self._shapes = dict(shapes)

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return features

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)


class MaskLabResNetFPN(Backbone):
    """ResNet + FPN returning the pyramid plus the requested hypercolumn features."""

    def __init__(self, bottom_up: ResNet, fpn: FPN, hypercolumn_features: List[str]):
        """
        Args:
            bottom_up: detectron2 ResNet with a :class:`BasicStem`.
            fpn: FPN whose bottom-up is a :class:`_GivenFeatures` with ``bottom_up``'s shapes.
            hypercolumn_features: names among "conv1", "stem", "res2".. "res5" also returned.
        """
        super().__init__()
        if type(bottom_up.stem) is not BasicStem:
            raise ValueError(f"MaskLabResNetFPN needs a BasicStem, got {type(bottom_up.stem)}")
        self.bottom_up = bottom_up
        self.fpn = fpn
        shapes = self._bottom_up_shapes()
        unknown = [f for f in hypercolumn_features if f not in shapes]
        if unknown:
            raise ValueError(
                f"MODEL.MASKLAB.HYPERCOLUMN_FEATURES {unknown} unknown; "
                f"choose from {sorted(shapes)}"
            )
        self.hypercolumn_features = list(hypercolumn_features)
        self._out_shapes = dict(fpn.output_shape())
        self._out_shapes.update({f: shapes[f] for f in self.hypercolumn_features})

    def _bottom_up_shapes(self) -> Dict[str, ShapeSpec]:
        stem = self.bottom_up.stem
        shapes = {
            "conv1": ShapeSpec(channels=stem.out_channels, stride=2),
            "stem": ShapeSpec(channels=stem.out_channels, stride=stem.stride),
        }
        for name in self.bottom_up.stage_names:
            shapes[name] = ShapeSpec(
                channels=self.bottom_up._out_feature_channels[name],
                stride=self.bottom_up._out_feature_strides[name],
            )
        return shapes

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, 3, H, W) normalised images, H and W multiples of ``size_divisibility``.

        Returns:
            "p2".."p6" (FPN) and the hypercolumn features, e.g. "conv1" (N, 64, H/2, W/2).
        """
        stem = self.bottom_up.stem
        conv1 = F.relu(stem.conv1(x))  # BasicStem.forward, with its conv1 output kept
        y = F.max_pool2d(conv1, kernel_size=3, stride=2, padding=1)
        bottom = {"conv1": conv1, "stem": y}
        for name, stage in zip(self.bottom_up.stage_names, self.bottom_up.stages):
            y = stage(y)
            bottom[name] = y
        out = self.fpn(bottom)
        out.update({f: bottom[f] for f in self.hypercolumn_features})
        return out

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._out_shapes)

    @property
    def size_divisibility(self) -> int:
        return self.fpn.size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return self.fpn.padding_constraints


@BACKBONE_REGISTRY.register()
def build_masklab_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> MaskLabResNetFPN:
    """detectron2's ResNet-FPN (MODEL.RESNETS / MODEL.FPN keys) plus the hypercolumn features."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    fpn = FPN(
        bottom_up=_GivenFeatures(bottom_up.output_shape()),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    return MaskLabResNetFPN(bottom_up, fpn, cfg.MODEL.MASKLAB.HYPERCOLUMN_FEATURES)
