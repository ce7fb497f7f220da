"""The FCOS head: classification / box towers shared across levels, and its predictors."""

import math
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from torch import nn

Tensors = List[torch.Tensor]


class Scale(nn.Module):
    """A learnable scalar ``s_l`` (one per FPN level) multiplying the regression output."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class PerLevelNorm(nn.ModuleList):
    """One norm layer per FPN level (BN statistics differ across levels); called with the level."""

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        return self[level](x)


def _norm_layer(norm: str, channels: int, num_levels: int) -> Optional[nn.Module]:
    if norm in ("", "none", None):
        return None
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    if norm in ("BN", "SyncBN"):
        return PerLevelNorm([get_norm(norm, channels) for _ in range(num_levels)])
    raise ValueError(f"MODEL.FCOS.NORM must be GN, BN, SyncBN or none, got {norm!r}")


class FCOSHead(nn.Module):
    """Towers and predictors of FCOS, applied to every level with shared weights.

    ``cls_tower`` -> ``cls_logits`` (C per location); ``bbox_tower`` -> ``bbox_pred`` (l, t, r, b
    in units of the level's stride, through ``relu(Scale_l(.))``) and ``ctrness`` (centre-ness
    or IoU logit). The optional ``top_module`` (CondInst's controller, BlendMask's attention
    layer) also runs on the box tower: the per-location extra output of the mask methods.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: List[ShapeSpec],
        num_classes: int,
        num_cls_convs: int = 4,
        num_box_convs: int = 4,
        num_share_convs: int = 0,
        norm: str = "GN",
        use_scale: bool = True,
        prior_prob: float = 0.01,
        bbox_pred_bias_init: float = 0.0,
    ):
        super().__init__()
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(f"FCOS needs the same channel count on every level, got {channels}")
        ch = channels.pop()
        self.num_classes = num_classes
        self.num_levels = len(input_shape)
        self.in_channels_to_top_module = ch
        for name, n in (
            ("share", num_share_convs),
            ("cls", num_cls_convs),
            ("bbox", num_box_convs),
        ):
            layers = []
            for _ in range(n):
                layers.append(nn.Conv2d(ch, ch, kernel_size=3, padding=1, bias=True))
                norm_layer = _norm_layer(norm, ch, self.num_levels)
                if norm_layer is not None:
                    layers.append(norm_layer)
                layers.append(nn.ReLU())
            self.add_module(f"{name}_tower", nn.Sequential(*layers))
        self.cls_logits = nn.Conv2d(ch, num_classes, kernel_size=3, padding=1)
        self.bbox_pred = nn.Conv2d(ch, 4, kernel_size=3, padding=1)
        self.ctrness = nn.Conv2d(ch, 1, kernel_size=3, padding=1)
        self.scales = (
            nn.ModuleList([Scale(1.0) for _ in range(self.num_levels)]) if use_scale else None
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.constant_(self.bbox_pred.bias, bbox_pred_bias_init)

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        f = cfg.MODEL.FCOS
        return {
            "input_shape": input_shape,
            "num_classes": f.NUM_CLASSES,
            "num_cls_convs": f.NUM_CLS_CONVS,
            "num_box_convs": f.NUM_BOX_CONVS,
            "num_share_convs": f.NUM_SHARE_CONVS,
            "norm": f.NORM,
            "use_scale": f.USE_SCALE,
            "prior_prob": f.PRIOR_PROB,
            "bbox_pred_bias_init": f.BBOX_PRED_BIAS_INIT,
        }

    @staticmethod
    def _tower(tower: nn.Sequential, x: torch.Tensor, level: int) -> torch.Tensor:
        for m in tower:
            x = m(x, level) if isinstance(m, PerLevelNorm) else m(x)
        return x

    def forward(
        self, features: Tensors, top_module: Optional[Callable] = None
    ) -> Tuple[Tensors, Tensors, Tensors, Tensors]:
        """
        Args:
            features: per level (N, ch, H_l, W_l).
            top_module: optional module applied to the box tower of every level.

        Returns:
            logits (N, C, H_l, W_l), reg (N, 4, H_l, W_l) >= 0 in stride units, ctrness
            (N, 1, H_l, W_l), top_feats (N, D, H_l, W_l) (empty list without top_module);
            each a list over levels.
        """
        logits, reg, ctrness, top_feats = [], [], [], []
        for level, x in enumerate(features):
            x = self._tower(self.share_tower, x, level)
            cls_t = self._tower(self.cls_tower, x, level)
            box_t = self._tower(self.bbox_tower, x, level)
            logits.append(self.cls_logits(cls_t))
            ctrness.append(self.ctrness(box_t))
            r = self.bbox_pred(box_t)
            if self.scales is not None:
                r = self.scales[level](r)
            reg.append(F.relu(r))  # ReLU, not exp: targets are normalised by the stride
            if top_module is not None:
                top_feats.append(top_module(box_t))
        return logits, reg, ctrness, top_feats
