"""Instance context encoder (paper Sec. 3.2): FPN + pyramid pooling on C5 + multi-scale fusion.

One output map at the stride of the finest input (C3: stride 8) carries the context of all
levels; the decoder works on it alone.
"""

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from fvcore.nn.weight_init import c2_msra_fill, c2_xavier_fill
from torch import nn

from .registry import SPARSEINST_ENCODER_REGISTRY, lookup


class PyramidPoolingModule(nn.Module):
    """PSPNet's pyramid pooling: average-pool to each bin size, 1x1 conv + ReLU, upsample,
    concatenate with the input, 1x1 conv + ReLU back to the input's channels."""

    def __init__(self, channels: int, bins: Sequence[int], bin_channels: int):
        super().__init__()
        self.bins = tuple(int(b) for b in bins)
        self.convs = nn.ModuleList([Conv2d(channels, bin_channels, 1) for _ in self.bins])
        self.bottleneck = Conv2d(channels + len(self.bins) * bin_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        size = x.shape[-2:]
        pooled = [
            F.interpolate(
                F.relu(conv(F.adaptive_avg_pool2d(x, b))),
                size=size,
                mode="bilinear",
                align_corners=False,
            )
            for b, conv in zip(self.bins, self.convs)
        ]
        return F.relu(self.bottleneck(torch.cat(pooled + [x], dim=1)))


@SPARSEINST_ENCODER_REGISTRY.register()
class InstanceContextEncoder(nn.Module):
    """FPN over C3-C5 (lateral 1x1 + top-down nearest x2 + output 3x3), the PPM on the
    lateral of C5, then the level outputs upsampled to the C3 size, concatenated and fused by
    a 1x1 conv. No normalisation layers (as the reference)."""

    @configurable
    def __init__(
        self,
        *,
        in_features: Sequence[str],
        in_channels: Sequence[int],
        channels: int,
        ppm_bins: Sequence[int] = (1, 2, 3, 6),
    ):
        """
        Args:
            in_features: backbone feature names, finest first (e.g. res3, res4, res5).
            in_channels: their channels.
            channels: D, channels of every encoder layer and of the output.
            ppm_bins: bin sizes of the pyramid pooling module (each gets D/4 channels).
        """
        super().__init__()
        if len(in_features) != len(in_channels) or not in_features:
            raise ValueError(
                f"InstanceContextEncoder: in_features {list(in_features)} and in_channels "
                f"{list(in_channels)} must be non-empty and of the same length"
            )
        self.in_features = list(in_features)
        self.out_channels = channels
        self.lateral_convs = nn.ModuleList([Conv2d(c, channels, 1) for c in in_channels])
        self.output_convs = nn.ModuleList(
            [Conv2d(channels, channels, 3, padding=1) for _ in in_channels]
        )
        for m in list(self.lateral_convs) + list(self.output_convs):
            c2_xavier_fill(m)
        self.ppm = PyramidPoolingModule(channels, ppm_bins, channels // 4)
        self.fusion = Conv2d(channels * len(in_channels), channels, 1)
        c2_msra_fill(self.fusion)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        enc = cfg.MODEL.SPARSE_INST.ENCODER
        missing = [f for f in enc.IN_FEATURES if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.SPARSE_INST.ENCODER.IN_FEATURES={list(enc.IN_FEATURES)}: the backbone "
                f"has no {missing} (it outputs {sorted(input_shape)}; set "
                "MODEL.RESNETS.OUT_FEATURES)"
            )
        return {
            "in_features": list(enc.IN_FEATURES),
            "in_channels": [input_shape[f].channels for f in enc.IN_FEATURES],
            "channels": enc.NUM_CHANNELS,
            "ppm_bins": list(enc.PPM_BINS),
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """
        Args:
            features: backbone maps; ``features[in_features[i]]`` is (B, C_i, H_i, W_i) with
                H_i = H_0 / 2^i.

        Returns:
            (B, D, H_0, W_0): the fused instance context features (stride of the finest level).
        """
        xs: List[torch.Tensor] = [features[f] for f in self.in_features]
        n = len(xs)
        prev = self.ppm(self.lateral_convs[n - 1](xs[n - 1]))
        outs = [self.output_convs[n - 1](prev)]
        for i in range(n - 2, -1, -1):
            lateral = self.lateral_convs[i](xs[i])
            prev = lateral + F.interpolate(prev, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output_convs[i](prev))
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [
            F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs[1:]
        ]
        return self.fusion(torch.cat(outs, dim=1))


def build_sparseinst_encoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """The encoder named by ``MODEL.SPARSE_INST.ENCODER.NAME``."""
    name = cfg.MODEL.SPARSE_INST.ENCODER.NAME
    return lookup(SPARSEINST_ENCODER_REGISTRY, name, "MODEL.SPARSE_INST.ENCODER.NAME")(
        cfg, input_shape
    )
