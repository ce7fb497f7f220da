"""SOLO and Decoupled SOLO heads (Wang et al., "SOLO: Segmenting Objects by Locations", 2020)."""

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from instseg_d2.layers import coordinate_features

from .base import SOLO_HEAD_REGISTRY, GridHead, init_normal, prior_bias, select_resize


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


@SOLO_HEAD_REGISTRY.register()
class SOLOHead(GridHead):
    """Vanilla SOLO: every cell of the S x S grid owns one full mask channel.

    Mask branch (shared over levels): [features, x, y] (CoordConv) -> ``num_convs`` x (3x3 conv
    + GN + ReLU) -> bilinear x2 -> per-level 1x1 conv to S^2 channels, so level k predicts
    S_k^2 masks at half its stride. Category branch: :class:`CategoryBranch`. Arguments: see
    :class:`GridHead` (SOLO: 7 convs of 256 channels).

    ``outputs``: ``cate`` list of (N, C, S, S); ``masks`` list of (N, S^2, 2h, 2w) logits.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mask_tower = self.tower(2 * self.use_coord)
        self.mask_preds = nn.ModuleList(
            [nn.Conv2d(self.channels, s * s, 1) for s in self.num_grids]
        )
        init_normal(self.mask_preds, bias=prior_bias(self.mask_prior_prob))

    def forward(self, feats: List[torch.Tensor], features: Optional[Dict] = None) -> Dict:
        cate, masks = [], []
        for level, x in enumerate(feats):
            m = x
            if self.use_coord:
                n, _, h, w = x.shape
                m = torch.cat([x, coordinate_features(n, h, w, x.device, x.dtype)], dim=1)
            m = _upsample2(self.mask_tower(m))
            masks.append(self.mask_preds[level](m))
            cate.append(self.cate_branch(x, self.num_grids[level]))
        return {"cate": cate, "masks": masks}

    def mask_probs(self, outputs, level, img_idx, cells, out_size=None) -> torch.Tensor:
        """(K, h, w) sigmoid of the mask channels ``cells`` of images ``img_idx`` (both (K,))."""
        probs = outputs["masks"][level][img_idx, cells].sigmoid()
        return select_resize(probs, out_size)


@SOLO_HEAD_REGISTRY.register()
class DecoupledSOLOHead(GridHead):
    """Decoupled SOLO: the S^2 masks of a level are factored into S "x" and S "y" masks.

    Two mask branches, each as SOLO's but with a single coordinate channel (x for the x branch,
    y for the y branch) and ending in a per-level 3x3 conv to S channels. The mask of cell
    (i, j) (row i, column j) is ``sigmoid(y_i) * sigmoid(x_j)``: 2S instead of S^2 output
    channels per level. Arguments: see :class:`GridHead`.

    ``outputs``: ``cate``; ``masks_x`` / ``masks_y`` lists of (N, S, 2h, 2w) logits.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mask_tower_x = self.tower(int(self.use_coord))
        self.mask_tower_y = self.tower(int(self.use_coord))
        ch, grids = self.channels, self.num_grids
        self.mask_preds_x = nn.ModuleList([nn.Conv2d(ch, s, 3, padding=1) for s in grids])
        self.mask_preds_y = nn.ModuleList([nn.Conv2d(ch, s, 3, padding=1) for s in grids])
        for m in (self.mask_preds_x, self.mask_preds_y):
            init_normal(m, bias=prior_bias(self.mask_prior_prob))

    def forward(self, feats: List[torch.Tensor], features: Optional[Dict] = None) -> Dict:
        cate, masks_x, masks_y = [], [], []
        for level, x in enumerate(feats):
            mx, my = x, x
            if self.use_coord:
                n, _, h, w = x.shape
                coords = coordinate_features(n, h, w, x.device, x.dtype)
                mx = torch.cat([x, coords[:, :1]], dim=1)
                my = torch.cat([x, coords[:, 1:]], dim=1)
            masks_x.append(self.mask_preds_x[level](_upsample2(self.mask_tower_x(mx))))
            masks_y.append(self.mask_preds_y[level](_upsample2(self.mask_tower_y(my))))
            cate.append(self.cate_branch(x, self.num_grids[level]))
        return {"cate": cate, "masks_x": masks_x, "masks_y": masks_y}

    def mask_probs(self, outputs, level, img_idx, cells, out_size=None) -> torch.Tensor:
        """(K, h, w) ``sigmoid(y_i) * sigmoid(x_j)`` for cells ``i * S + j`` (each (K,))."""
        s = self.num_grids[level]
        rows, cols = cells // s, cells % s
        px = select_resize(outputs["masks_x"][level][img_idx, cols].sigmoid(), out_size)
        py = select_resize(outputs["masks_y"][level][img_idx, rows].sigmoid(), out_size)
        return px * py
