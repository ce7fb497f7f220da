"""CondInst's mask branch F_mask and its optional auxiliary semantic segmentation head."""

import math
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import Instances
from fvcore.nn import sigmoid_focal_loss_jit
from torch import nn

from instseg_d2.layers import conv_norm_relu, sample_at_stride
from instseg_d2.modeling.refine import RefineAndSum


class MaskBranch(RefineAndSum):
    """F_mask: ``refine`` (conv3x3 to ``channels`` per input level), sum at the first level's
    stride (coarser levels upsampled with aligned bilinear), ``tower`` (``num_convs`` conv3x3,
    then conv1x1 to ``out_channels``).

    With ``num_classes`` set, also a semantic head on the first level (two conv3x3, conv1x1 to
    C logits) trained with a focal loss (CondInst "w/ sem.").
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        in_features: Sequence[str] = ("p3", "p4", "p5"),
        channels: int = 128,
        out_channels: int = 8,
        num_convs: int = 4,
        norm: str = "BN",
        num_classes: Optional[int] = None,
        prior_prob: float = 0.01,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__(
            input_shape, in_features, channels, norm, aligned=True,
            config_key="MODEL.CONDINST.MASK_BRANCH.IN_FEATURES",
        )  # fmt: skip
        tower = [conv_norm_relu(channels, channels, 3, norm) for _ in range(num_convs)]
        tower.append(nn.Conv2d(channels, out_channels, 1))
        self.tower = nn.Sequential(*tower)
        self.sem_loss_on = num_classes is not None
        if self.sem_loss_on:
            in_ch = input_shape[self.in_features[0]].channels
            self.seg_head = nn.Sequential(
                conv_norm_relu(in_ch, channels, 3, norm),
                conv_norm_relu(channels, channels, 3, norm),
            )
            self.logits = nn.Conv2d(channels, num_classes, kernel_size=1)
            nn.init.constant_(self.logits.bias, -math.log((1 - prior_prob) / prior_prob))
            self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    @classmethod
    def from_config(cls, cfg, input_shape):
        mb = cfg.MODEL.CONDINST.MASK_BRANCH
        return {
            "input_shape": input_shape,
            "in_features": mb.IN_FEATURES,
            "channels": mb.CHANNELS,
            "out_channels": mb.OUT_CHANNELS,
            "num_convs": mb.NUM_CONVS,
            "norm": mb.NORM,
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES if mb.SEMANTIC_LOSS_ON else None,
            "prior_prob": cfg.MODEL.FCOS.PRIOR_PROB,
            "focal_alpha": cfg.MODEL.FCOS.LOSS_ALPHA,
            "focal_gamma": cfg.MODEL.FCOS.LOSS_GAMMA,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns F_mask, (N, out_channels, H/s, W/s) at ``self.out_stride``."""
        return self.tower(self.fuse(features))

    def semantic_loss(
        self, features: Dict[str, torch.Tensor], gt_instances: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """Focal loss of the semantic head against :func:`semantic_targets` (``gt_bitmasks_full``
        of each image), divided by the number of positive (pixel, class) pairs."""
        logits = self.logits(self.seg_head(features[self.in_features[0]]))
        targets = torch.stack(
            [
                semantic_targets(x.gt_bitmasks_full, x.gt_classes, self.out_stride)
                for x in gt_instances
            ]
        )
        classes = torch.arange(1, logits.shape[1] + 1, device=logits.device)[:, None, None]
        one_hot = (targets[:, None] == classes).to(logits.dtype)
        num_pos = one_hot.sum().clamp(min=1.0)
        loss = sigmoid_focal_loss_jit(
            logits, one_hot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        )
        return {"loss_sem": loss / num_pos}


def semantic_targets(masks: torch.Tensor, classes: torch.Tensor, stride: int) -> torch.Tensor:
    """Per pixel, 1 + the class of the smallest-area mask covering it (0 = background),
    sampled at ``[stride//2::stride]`` in both directions.

    Args:
        masks: (G, H, W) full-resolution masks (padded image size); classes: (G,).

    Returns:
        (ceil((H - stride//2) / stride), ...) int64.
    """
    m = sample_at_stride(masks, stride) > 0
    if len(masks) == 0:
        return torch.zeros(m.shape[1:], dtype=torch.long, device=masks.device)
    areas = masks.flatten(1).float().sum(dim=1)
    cost = torch.where(m, areas[:, None, None], torch.full_like(m, math.inf, dtype=areas.dtype))
    min_area, idx = cost.min(dim=0)
    return torch.where(torch.isfinite(min_area), classes[idx] + 1, torch.zeros_like(idx))
