"""MaskLab's optional "deformable crop and resize" for box classification (paper, sec. 3, Fig. 5).

The box is cropped and resized to G x G (detectron2's ROIPooler, ROIAlignV2); a small network
predicts from it one offset per cell ("sub-box"); each of the G x G sub-boxes, shifted by its
offset, is cropped and resized again to k x k and averaged, giving the G x G output. The second
crop samples with ``grid_sample``, so that the offsets get gradients (torchvision's ROIAlign has
none for the boxes). With zero offsets the output equals ROIAlignV2 at G x G with k x k samples
per cell.
"""

from typing import List

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from detectron2.modeling.poolers import (
    ROIPooler,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from detectron2.structures import Boxes
from torch import nn


class DeformableCropAndResize(nn.Module):
    """A drop-in replacement of a box head's ROIPooler (same inputs, same output shape)."""

    def __init__(
        self,
        pooler: ROIPooler,
        in_channels: int,
        sub_box_size: int = 2,
        offset_scale: float = 0.1,
        offset_dim: int = 256,
    ):
        """
        Args:
            pooler: the ROIPooler (ROIAlignV2, G x G) giving the first crop and the levels.
            in_channels: C of the pooled features.
            sub_box_size: k, each deformed sub-box is resized to k x k (paper's Fig. 8: 2 x 2).
            offset_scale: gamma, offsets are ``gamma * (o_x w, o_y h)`` for a w x h box (as in
                Dai et al.'s deformable RoI pooling; the paper does not give it).
            offset_dim: channels of the offset network (3x3 conv + ReLU, then 3x3 conv to 2).
        """
        super().__init__()
        if any(getattr(p, "aligned", False) is not True for p in pooler.level_poolers):
            raise ValueError(
                "MODEL.MASKLAB.DEFORMABLE_CROP_AND_RESIZE needs MODEL.ROI_BOX_HEAD.POOLER_TYPE "
                "'ROIAlignV2'"
            )
        self.pooler = pooler
        self.sub_box_size = sub_box_size
        self.offset_scale = offset_scale
        self.offset_net = nn.Sequential(
            Conv2d(in_channels, offset_dim, 3, padding=1, activation=F.relu),
            nn.Conv2d(offset_dim, 2, 3, padding=1),
        )
        nn.init.normal_(self.offset_net[0].weight, std=0.01)
        nn.init.zeros_(self.offset_net[0].bias)
        nn.init.zeros_(self.offset_net[1].weight)  # start as plain crop and resize
        nn.init.zeros_(self.offset_net[1].bias)

    def sample_points(self, rois: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Image coordinates of the k x k sampling points of every deformed sub-box.

        Args:
            rois: (R, 5) ``(batch index, x0, y0, x1, y1)``.
            offsets: (R, 2, G, G) raw network outputs.

        Returns:
            (R, G, G, k * k, 2) points ``(x, y)``.
        """
        g, k = offsets.shape[-1], self.sub_box_size
        sub_w = ((rois[:, 3] - rois[:, 1]) / g)[:, None, None]  # (R, 1, 1)
        sub_h = ((rois[:, 4] - rois[:, 2]) / g)[:, None, None]
        cell = torch.arange(g, device=rois.device, dtype=rois.dtype)
        # top-left corner of sub-box (i, j), shifted by its offset: (R, G, G)
        x0 = (
            rois[:, 1, None, None]
            + (cell[None, None, :] + self.offset_scale * g * offsets[:, 0]) * sub_w
        )
        y0 = (
            rois[:, 2, None, None]
            + (cell[None, :, None] + self.offset_scale * g * offsets[:, 1]) * sub_h
        )
        t = (torch.arange(k, device=rois.device, dtype=rois.dtype) + 0.5) / k
        xs = x0[..., None, None] + sub_w[..., None, None] * t  # (R, G, G, 1, k)
        ys = y0[..., None, None] + sub_h[..., None, None] * t[:, None]  # (R, G, G, k, 1)
        xs, ys = torch.broadcast_tensors(xs, ys)
        return torch.stack([xs, ys], dim=-1).flatten(3, 4)

    def forward(self, x: List[torch.Tensor], box_lists: List[Boxes]) -> torch.Tensor:
        """
        Args:
            x: the pooler's feature levels, (N, C, H_l, W_l) each.
            box_lists: N Boxes, R in all.

        Returns:
            (R, C, G, G) pooled features.
        """
        first = self.pooler(x, box_lists)  # (R, C, G, G)
        if first.shape[0] == 0:
            return first
        offsets = self.offset_net(first)
        rois = convert_boxes_to_pooler_format(box_lists).to(first.dtype)
        points = self.sample_points(rois, offsets)  # (R, G, G, k*k, 2)
        r, g = first.shape[0], first.shape[-1]
        if len(x) == 1:
            levels = torch.zeros(r, dtype=torch.long, device=first.device)
        else:
            p = self.pooler
            levels = assign_boxes_to_levels(
                box_lists, p.min_level, p.max_level, p.canonical_box_size, p.canonical_level
            )
        out = []
        index = []
        for lvl, feat in enumerate(x):
            scale = self.pooler.level_poolers[lvl].spatial_scale
            hw = torch.tensor(
                [feat.shape[-1], feat.shape[-2]], dtype=first.dtype, device=feat.device
            )
            for n in range(feat.shape[0]):
                sel = torch.nonzero((levels == lvl) & (rois[:, 0] == n)).flatten()
                if len(sel) == 0:
                    continue
                # image coordinates -> grid_sample's [-1, 1] (align_corners=False: pixel edges)
                grid = (points[sel] * scale / hw * 2 - 1).reshape(1, len(sel), -1, 2)
                s = F.grid_sample(
                    feat[n : n + 1],
                    grid,
                    mode="bilinear",
                    padding_mode="border",
                    align_corners=False,
                )  # (1, C, R_n, G*G*k*k)
                s = s[0].reshape(feat.shape[1], len(sel), g, g, -1).mean(dim=-1)
                out.append(s.transpose(0, 1))
                index.append(sel)
        return first.new_zeros(first.shape).index_put((torch.cat(index),), torch.cat(out))
