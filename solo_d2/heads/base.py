"""The registry of SOLO heads and the pieces the three heads share.

A SOLO head maps the re-scaled instance levels (and, for SOLOv2, the FPN features) to

* ``outputs["cate"]``: list over levels of (N, C, S, S) category logits, and
* whatever the head needs to produce masks, queried through
  ``head.mask_probs(outputs, level, img_idx, cells, out_size=None)``: (K, h, w) mask
  probabilities of the given cells (``cells`` are flat indices ``i * S + j``, ``i`` the row) of
  the given images at that level, at the head's own resolution for the level (training
  targets are built at that size) or bilinearly resized to ``out_size`` (inference, stride 4).
"""

import math
from typing import List

import torch
import torch.nn.functional as F
from detectron2.utils.registry import Registry
from torch import nn

from instseg_d2.layers import conv_norm_relu, resize_maps

SOLO_HEAD_REGISTRY = Registry("SOLO_HEAD")
SOLO_HEAD_REGISTRY.__doc__ = """SOLO heads, selected by ``MODEL.SOLO.HEAD_NAME``.
Called with ``(cfg, input_shape)`` where input_shape is the backbone's ``output_shape()``."""


def build_solo_head(cfg, input_shape):
    """Build the head named by ``MODEL.SOLO.HEAD_NAME``; unknown names raise a ValueError."""
    name = cfg.MODEL.SOLO.HEAD_NAME
    if name not in SOLO_HEAD_REGISTRY:
        known = ", ".join(sorted(k for k, _ in SOLO_HEAD_REGISTRY))
        raise ValueError(f"MODEL.SOLO.HEAD_NAME={name!r} is not a SOLO head; known heads: {known}")
    return SOLO_HEAD_REGISTRY.get(name)(cfg, input_shape)


def rescale_instance_levels(feats: List[torch.Tensor]) -> List[torch.Tensor]:
    """SOLO's level re-scaling: first level x0.5, last level to the previous level's size.

    With P2..P6 (strides 4..64) this gives strides [8, 8, 16, 32, 32]. Bilinear,
    ``align_corners=False``, as the references.
    """
    if len(feats) < 2:
        raise ValueError(f"SOLO needs at least 2 instance levels, got {len(feats)}")
    out = list(feats)
    out[0] = F.interpolate(feats[0], scale_factor=0.5, mode="bilinear", align_corners=False)
    out[-1] = F.interpolate(
        feats[-1], size=feats[-2].shape[-2:], mode="bilinear", align_corners=False
    )
    return out


def conv_tower(in_ch: int, ch: int, num_convs: int, norm: str) -> nn.Sequential:
    """``num_convs`` blocks of 3x3 conv + norm + ReLU, the first from ``in_ch`` channels, in one
    flat ``Sequential`` (conv, norm, ReLU, conv, ...) as the references' towers."""
    blocks = [conv_norm_relu(in_ch if i == 0 else ch, ch, 3, norm) for i in range(num_convs)]
    return nn.Sequential(*[m for block in blocks for m in block])


def init_normal(module: nn.Module, std: float = 0.01, bias: float = 0.0) -> None:
    """Normal(0, std) weights and constant biases for every conv in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.constant_(m.bias, bias)


def prior_bias(prior_prob: float) -> float:
    """Bias b with sigmoid(b) = prior_prob (focal-loss initialisation)."""
    return -math.log((1 - prior_prob) / prior_prob)


class CategoryBranch(nn.Module):
    """Semantic category branch of every SOLO head.

    The level's features are bilinearly resized to S x S, then ``num_convs`` 3x3 conv + GN +
    ReLU, then a 3x3 conv to C logits: cell (i, j) predicts the class of the object whose
    centre falls in it.
    """

    def __init__(self, in_ch: int, ch: int, num_convs: int, num_classes: int, norm: str, prior):
        super().__init__()
        self.tower = conv_tower(in_ch, ch, num_convs, norm)
        self.pred = nn.Conv2d(ch, num_classes, 3, padding=1)
        init_normal(self.tower)
        init_normal(self.pred, bias=prior_bias(prior))

    def forward(self, x: torch.Tensor, num_grid: int) -> torch.Tensor:
        """(N, Cin, H, W) -> (N, C, S, S) logits."""
        x = F.interpolate(x, size=num_grid, mode="bilinear", align_corners=False)
        return self.pred(self.tower(x))


class GridHead(nn.Module):
    """What the three heads share: the grid numbers, CoordConv switch, tower hyper-parameters
    and the :class:`CategoryBranch`. Subclasses add their mask branch and ``mask_probs``.

    Args:
        in_channels: channels of the instance levels (FPN width).
        num_classes: C.
        num_grids: S per level.
        channels, num_convs, norm: width, depth and norm of the instance towers.
        use_coord: CoordConv on the mask / kernel branch input.
        prior_prob: initial probability of the category predictor.
        mask_prior_prob: initial probability of SOLO's (and Decoupled SOLO's x / y) mask
            predictors (references: 0.01; unused by SOLOv2).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_grids: List[int],
        channels: int = 256,
        num_convs: int = 7,
        norm: str = "GN",
        use_coord: bool = True,
        prior_prob: float = 0.01,
        mask_prior_prob: float = 0.01,
    ):
        super().__init__()
        self.num_grids = list(num_grids)
        self.use_coord = use_coord
        self.in_channels, self.channels, self.num_convs, self.norm = (
            in_channels, channels, num_convs, norm
        )  # fmt: skip
        self.mask_prior_prob = mask_prior_prob
        self.cate_branch = CategoryBranch(
            in_channels, channels, num_convs, num_classes, norm, prior_prob
        )

    @classmethod
    def from_config(cls, cfg, input_shape) -> dict:
        s = cfg.MODEL.SOLO
        channels = {input_shape[f].channels for f in s.INSTANCE_IN_FEATURES}
        if len(channels) != 1:
            raise ValueError(
                f"MODEL.SOLO.INSTANCE_IN_FEATURES must have equal channels: {channels}"
            )
        return {
            "in_channels": channels.pop(),
            "num_classes": s.NUM_CLASSES,
            "num_grids": list(s.NUM_GRIDS),
            "channels": s.INSTANCE_CHANNELS,
            "num_convs": s.NUM_INSTANCE_CONVS,
            "norm": s.NORM,
            "use_coord": s.USE_COORD_CONV,
            "prior_prob": s.PRIOR_PROB,
            "mask_prior_prob": s.MASK_PRIOR_PROB,
        }

    def tower(self, extra_in: int = 0) -> nn.Sequential:
        """A new instance tower (normal(0.01) init) on ``in_channels + extra_in`` channels."""
        t = conv_tower(self.in_channels + extra_in, self.channels, self.num_convs, self.norm)
        init_normal(t)
        return t


def select_resize(probs: torch.Tensor, out_size=None) -> torch.Tensor:
    """(K, h, w) -> (K, *out_size) bilinear (no-op without out_size)."""
    if out_size is None or tuple(probs.shape[-2:]) == tuple(out_size):
        return probs
    return resize_maps(probs, tuple(out_size))
