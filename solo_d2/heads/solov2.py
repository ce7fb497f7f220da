"""SOLOv2 head (Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation", NeurIPS 2020)."""

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from instseg_d2.layers import conv_norm_relu, coordinate_features

from .base import SOLO_HEAD_REGISTRY, GridHead, init_normal, select_resize


def _with_coords(x: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    return torch.cat([x, coordinate_features(n, h, w, x.device, x.dtype)], dim=1)


class MaskFeatureBranch(nn.Module):
    """SOLOv2's unified mask-feature branch: FPN P2..P5 fused into E channels at stride 4.

    Level 0: one 3x3 conv + GN + ReLU. Level l >= 1: l blocks of (3x3 conv + GN + ReLU,
    bilinear x2), so that every level reaches stride 4; the last level's input gets the two
    coordinate channels. The sum goes through a 1x1 conv + GN + ReLU to E channels.
    """

    def __init__(self, in_channels: int, channels: int, num_masks: int, num_levels: int, norm):
        super().__init__()
        self.levels = nn.ModuleList()
        for lvl in range(num_levels):
            coords = 2 if lvl == num_levels - 1 and lvl > 0 else 0
            blocks = [
                conv_norm_relu(channels if j else in_channels + coords, channels, 3, norm)
                for j in range(max(lvl, 1))
            ]
            self.levels.append(nn.ModuleList(blocks))
        # the reference always normalises this layer with GN, whatever its NORM
        self.pred = conv_norm_relu(channels, num_masks, 1, norm or "GN")
        init_normal(self)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        """list of (N, Cin, H_l, W_l) at strides 4, 8, 16, 32 -> (N, E, H_0, W_0)."""
        if len(feats) != len(self.levels):
            raise ValueError(f"mask branch expects {len(self.levels)} levels, got {len(feats)}")
        out = None
        for lvl, (x, blocks) in enumerate(zip(feats, self.levels)):
            if lvl == len(self.levels) - 1 and lvl > 0:
                x = _with_coords(x)
            for block in blocks:
                x = block(x)
                if lvl > 0:
                    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            out = x if out is None else out + x
        return self.pred(out)


@SOLO_HEAD_REGISTRY.register()
class SOLOv2Head(GridHead):
    """SOLOv2: each cell predicts a 1x1 kernel of E weights applied to shared mask features.

    Kernel branch (shared over levels): [features, x, y] bilinearly resized to S x S ->
    ``num_convs`` x (3x3 conv + GN + ReLU) -> 3x3 conv to E. Category branch:
    :class:`CategoryBranch`. Mask features: :class:`MaskFeatureBranch`. The mask of cell c of
    image b is ``sigmoid(sum_e kernel[b, e, c] * mask_feat[b, e])`` (dynamic 1x1 conv).

    Args:
        mask_in_features: FPN levels of the mask-feature branch (stride 4 first).
        mask_in_channels: their channels.
        mask_channels: width of the mask-feature branch.
        num_masks: E.
        others: see :class:`GridHead` (SOLOv2: 4 convs of 512 channels).

    ``outputs``: ``cate``; ``kernels`` list of (N, E, S, S); ``mask_feat`` (N, E, H/4, W/4).
    """

    @configurable
    def __init__(
        self,
        *,
        mask_in_features: List[str],
        mask_in_channels: int,
        mask_channels: int = 128,
        num_masks: int = 256,
        channels: int = 512,
        num_convs: int = 4,
        **kwargs,
    ):
        super().__init__(channels=channels, num_convs=num_convs, **kwargs)
        self.mask_in_features = list(mask_in_features)
        self.kernel_tower = self.tower(2 * self.use_coord)
        self.kernel_pred = nn.Conv2d(channels, num_masks, 3, padding=1)
        init_normal(self.kernel_pred)
        self.mask_branch = MaskFeatureBranch(
            mask_in_channels, mask_channels, num_masks, len(mask_in_features), self.norm
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        s = cfg.MODEL.SOLO
        ret = super().from_config(cfg, input_shape)
        channels = {input_shape[f].channels for f in s.MASK_IN_FEATURES}
        if len(channels) != 1:
            raise ValueError(f"MODEL.SOLO.MASK_IN_FEATURES must have equal channels: {channels}")
        ret.update(
            mask_in_features=list(s.MASK_IN_FEATURES),
            mask_in_channels=channels.pop(),
            mask_channels=s.MASK_CHANNELS,
            num_masks=s.NUM_MASKS,
        )
        return ret

    def forward(self, feats: List[torch.Tensor], features: Dict[str, torch.Tensor]) -> Dict:
        cate, kernels = [], []
        for level, x in enumerate(feats):
            s = self.num_grids[level]
            k = _with_coords(x) if self.use_coord else x
            k = F.interpolate(k, size=s, mode="bilinear", align_corners=False)
            kernels.append(self.kernel_pred(self.kernel_tower(k)))
            cate.append(self.cate_branch(x, s))
        mask_feat = self.mask_branch([features[f] for f in self.mask_in_features])
        return {"cate": cate, "kernels": kernels, "mask_feat": mask_feat}

    def mask_probs(self, outputs, level, img_idx, cells, out_size=None) -> torch.Tensor:
        """(K, H/4, W/4) masks of the dynamic 1x1 convs of ``cells`` of images ``img_idx``."""
        feat = outputs["mask_feat"]  # (N, E, H, W)
        kernels = outputs["kernels"][level].flatten(2)[img_idx, :, cells]  # (K, E)
        logits = feat.new_zeros((kernels.shape[0], *feat.shape[-2:]))
        for b in range(feat.shape[0]):  # every image, also those without cells (trace)
            sel = img_idx == b
            logits[sel] = torch.einsum("ke,ehw->khw", kernels[sel], feat[b])
        return select_resize(logits.sigmoid(), out_size)
