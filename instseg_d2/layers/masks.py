"""Mask geometry shared by several methods."""

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
