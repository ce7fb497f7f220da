"""Coordinate features and location grids."""

import torch


def coordinate_features(n: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """CoordConv channels (x, y), each linearly spaced in [-1, 1] (SOLO, SparseInst).

    Returns:
        (n, 2, h, w): channel 0 varies along x (columns), channel 1 along y (rows).
    """
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], dim=0).unsqueeze(0).expand(n, 2, h, w)


def compute_locations(h: int, w: int, stride: int, device=None) -> torch.Tensor:
    """Image coordinates of the centres of an (h, w) feature map of the given stride (FCOS).

    Location of cell (i, j) is ``(j*stride + stride//2, i*stride + stride//2)``.

    Returns:
        (h*w, 2) float tensor of ``(x, y)``, row-major (x varies fastest).
    """
    xs = torch.arange(0, w * stride, step=stride, dtype=torch.float32, device=device)
    ys = torch.arange(0, h * stride, step=stride, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1) + stride // 2
