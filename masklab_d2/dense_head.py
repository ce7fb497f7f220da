"""MaskLab's two dense outputs: semantic segmentation logits and direction logits."""

from typing import Dict, List, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn


class MaskLabDenseHead(nn.Module):
    """1x1 convs on the shared feature map: K + 1 semantic logits and D * B direction logits.

    The shared map is the sum of the input levels, each bilinearly resized to the first (finest)
    one, then normalised + ReLU (the paper's shared map is the output of ResNet's conv5 block,
    normalised and rectified; FPN outputs are neither, and a 1x1 conv on their raw sum diverged
    at the shapes learning rate); optional 3x3 convs follow (the paper has none).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        in_strides: List[int],
        num_classes: int,
        num_directions: int = 8,
        num_distance_bins: int = 4,
        num_convs: int = 0,
        conv_dim: int = 256,
        norm: str = "GN",
    ):
        """
        Args:
            in_channels: channels of every input level.
            in_strides: strides of the input levels, finest first.
            num_classes: K foreground classes (the semantic logits have K + 1, background last).
            num_directions, num_distance_bins: D and B, D * B direction channels.
            num_convs, conv_dim: optional 3x3 conv + norm + ReLU layers before the predictors.
            norm: normalisation of the fused map and of the convs (detectron2's ``get_norm``
                names); "": the raw sum of the levels, no ReLU.
        """
        super().__init__()
        if list(in_strides) != sorted(in_strides):
            raise ValueError(
                f"MODEL.MASKLAB.DENSE_IN_FEATURES must go fine to coarse: {in_strides}"
            )
        self.stride = in_strides[0]
        layers = [get_norm(norm, in_channels), nn.ReLU()] if norm else []
        dim = in_channels
        for _ in range(num_convs):
            conv = Conv2d(dim, conv_dim, 3, padding=1, bias=not norm, norm=get_norm(norm, conv_dim))
            weight_init.c2_msra_fill(conv)
            layers += [conv, nn.ReLU()]
            dim = conv_dim
        self.convs = nn.Sequential(*layers)
        self.semantic = nn.Conv2d(dim, num_classes + 1, 1)
        self.direction = nn.Conv2d(dim, num_directions * num_distance_bins, 1)
        for layer in (self.semantic, self.direction):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        names = cfg.MODEL.MASKLAB.DENSE_IN_FEATURES
        missing = [f for f in names if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.MASKLAB.DENSE_IN_FEATURES {missing} not among the backbone's outputs "
                f"{sorted(input_shape)}"
            )
        channels = {input_shape[f].channels for f in names}
        if len(channels) != 1:
            raise ValueError(f"MODEL.MASKLAB.DENSE_IN_FEATURES need equal channels: {channels}")
        return {
            "in_channels": channels.pop(),
            "in_strides": [input_shape[f].stride for f in names],
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "num_directions": cfg.MODEL.MASKLAB.NUM_DIRECTIONS,
            "num_distance_bins": cfg.MODEL.MASKLAB.NUM_DISTANCE_BINS,
            "num_convs": cfg.MODEL.MASKLAB.DENSE_NUM_CONVS,
            "conv_dim": cfg.MODEL.MASKLAB.DENSE_CONV_DIM,
            "norm": cfg.MODEL.MASKLAB.DENSE_NORM,
        }

    def forward(self, features: List[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            features: the input levels, (N, C, H_l, W_l) each, finest first.

        Returns:
            semantic logits (N, K + 1, H, W) and direction logits (N, D * B, H, W) at the finest
            level's resolution (stride ``self.stride``).
        """
        x = features[0]
        for f in features[1:]:
            x = x + F.interpolate(f, size=x.shape[-2:], mode="bilinear", align_corners=False)
        x = self.convs(x)
        return self.semantic(x), self.direction(x)
