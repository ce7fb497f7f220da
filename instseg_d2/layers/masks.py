"""Mask geometry shared by several methods."""

from typing import Optional

import torch


def center_of_mass(masks: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``(x, y)`` of each mask, in pixel-index coordinates.

    Pixel ``(i, j)`` (row, column) contributes position ``(x=j, y=i)``; add 0.5 for continuous
    image coordinates. Empty masks get ``(nan, nan)`` so that callers must handle them.

    Args:
        masks: (N, H, W) binary or soft masks.

    Returns:
        (N, 2) float tensor of ``(x, y)``.
    """
    if masks.dim() != 3:
        raise ValueError(f"center_of_mass expects (N, H, W), got {tuple(masks.shape)}")
    m = masks.float()
    h, w = m.shape[1:]
    ys = torch.arange(h, device=m.device, dtype=m.dtype)
    xs = torch.arange(w, device=m.device, dtype=m.dtype)
    total = m.sum(dim=(1, 2))
    cx = (m.sum(dim=1) * xs).sum(dim=1) / total
    cy = (m.sum(dim=2) * ys).sum(dim=1) / total
    return torch.stack([cx, cy], dim=1)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``(x0, y0, x1, y1)`` boxes around binary masks (x1, y1 exclusive: pixel edges).

    Empty masks give ``(0, 0, 0, 0)``. This is how box-free methods (SOLO, SparseInst, DVIS)
    fill ``pred_boxes`` so that COCO box AP is meaningful.

    Args:
        masks: (N, H, W) bool or {0, 1} tensor.

    Returns:
        (N, 4) float tensor.
    """
    if masks.dim() != 3:
        raise ValueError(f"boxes_from_masks expects (N, H, W), got {tuple(masks.shape)}")
    n = masks.shape[0]
    boxes = torch.zeros(n, 4, dtype=torch.float32, device=masks.device)
    m = masks > 0 if masks.dtype != torch.bool else masks
    rows = m.any(dim=2)  # (N, H)
    cols = m.any(dim=1)  # (N, W)
    nonempty = rows.any(dim=1)
    h, w = m.shape[1:]
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    y0 = torch.where(rows, ar_h, h).min(dim=1).values  # h, w: larger than any index
    y1 = torch.where(rows, ar_h, -1).max(dim=1).values + 1
    x0 = torch.where(cols, ar_w, w).min(dim=1).values
    x1 = torch.where(cols, ar_w, -1).max(dim=1).values + 1
    out = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[nonempty] = out[nonempty]
    return boxes


def mask_iou_matrix(
    masks: torch.Tensor,
    other: Optional[torch.Tensor] = None,
    *,
    areas: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Pairwise IoU of binary masks, ``inter / (area_i + area_j - inter)``.

    Args:
        masks: (N, H, W) bool or {0, 1}.
        other: (M, H, W) bool or {0, 1}; default ``masks`` itself.
        areas: optional (N,) precomputed areas of ``masks`` (only without ``other``).

    Returns:
        (N, M) float IoU (0 where both masks are empty).
    """
    if other is not None and areas is not None:
        raise ValueError("mask_iou_matrix: areas are those of masks against themselves, not other")
    flat = masks.flatten(1).float()
    if areas is None:
        areas = flat.sum(dim=1)
    areas = areas.float()
    flat_o = flat if other is None else other.flatten(1).float()
    areas_o = areas if other is None else flat_o.sum(dim=1)
    inter = flat @ flat_o.t()
    union = areas[:, None] + areas_o[None, :] - inter
    return inter / union.clamp(min=1e-6)
