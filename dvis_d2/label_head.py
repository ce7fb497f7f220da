"""The label FCN head: one real-valued instance-label channel at stride 4."""

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, get_norm
from torch import nn

from instseg_d2.layers import aligned_bilinear


class LabelHead(nn.Module):
    """Decoder on the stride-8 feature (P3 of the FPN top-down path): ``num_convs`` 3x3 convs,
    bilinear upsampling x2 (pixel centres aligned), one 3x3 conv and a 1x1 conv to one channel
    (research code's layout). The caller applies the ReLU that makes the labels ``f >= 0``; the
    raw output ``z`` is returned because the binary loss is evaluated on it.
    """

    @configurable
    def __init__(
        self, *, in_channels: int, conv_dim: int = 256, num_convs: int = 3, norm: str = ""
    ):
        super().__init__()
        convs, c = [], in_channels
        for _ in range(num_convs):
            convs.append(self._conv(c, conv_dim, norm))
            c = conv_dim
        self.convs = nn.Sequential(*convs)
        self.up_conv = self._conv(c, conv_dim, norm)
        self.predictor = nn.Conv2d(conv_dim, 1, kernel_size=1)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    @staticmethod
    def _conv(c_in: int, c_out: int, norm: str) -> nn.Module:
        conv = Conv2d(
            c_in,
            c_out,
            kernel_size=3,
            padding=1,
            bias=not norm,
            norm=get_norm(norm, c_out),
            activation=nn.ReLU(inplace=True),
        )
        weight_init.c2_msra_fill(conv)
        return conv

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.DVIS.HEAD
        return {
            "in_channels": input_shape.channels,
            "conv_dim": h.CONV_DIM,
            "num_convs": h.NUM_CONVS,
            "norm": h.NORM,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) feature at stride s -> (B, 2H, 2W) raw labels ``z`` at stride s / 2."""
        x = aligned_bilinear(self.convs(x), 2)
        return self.predictor(self.up_conv(x))[:, 0]
