"""The P3-P5 "refine and sum" stem of the mask branches of CondInst and BlendMask."""

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from torch import nn

from ..layers import aligned_bilinear, conv_norm_relu


class RefineAndSum(nn.Module):
    """Base of a mask branch: ``refine`` (conv3x3 + norm + ReLU to ``channels``, one per input
    level), then :meth:`fuse` sums them at the first (finest) level's resolution.

    Coarser levels are upsampled with :func:`instseg_d2.layers.aligned_bilinear` (CondInst) or
    plain bilinear interpolation (``aligned=False``, BlendMask).
    """

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        in_features: Sequence[str],
        channels: int,
        norm: str,
        aligned: bool = True,
        config_key: str = "IN_FEATURES",
    ):
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"{config_key} {list(in_features)}: the backbone has no {missing} "
                f"(it gives {sorted(input_shape)})"
            )
        self.in_features = list(in_features)
        self.out_stride = input_shape[self.in_features[0]].stride
        self.aligned = aligned
        self.refine = nn.ModuleList(
            [conv_norm_relu(input_shape[f].channels, channels, 3, norm) for f in self.in_features]
        )

    def fuse(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, channels, H, W) at the first level's resolution."""
        x = None
        for f, refine in zip(self.in_features, self.refine):
            y = refine(features[f])
            if x is None:
                x = y
            elif self.aligned:
                factor = x.shape[-1] // y.shape[-1]
                if tuple(x.shape[-2:]) != (y.shape[-2] * factor, y.shape[-1] * factor):
                    raise ValueError(f"{f} {tuple(y.shape)} does not divide {tuple(x.shape)}")
                x = x + aligned_bilinear(y, factor)
            else:
                x = x + F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=False)
        return x


def top_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """The per-location extra output on FCOS's box tower (CondInst's controller, BlendMask's
    attention layer): conv3x3, weights normal(std 0.01), bias 0."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, 0)
    return conv
