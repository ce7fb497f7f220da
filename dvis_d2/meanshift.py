"""Batched mean-shift of label values and connected components, in torch (CPU and GPU).

DVIS discretizes the real-valued label map by mean-shift at two bandwidths. Here the mean-shift
runs in the range (label-value) domain of each image: a value ``y`` moves to the kernel-weighted
mean of the image's label values, until it stops. The kernel is a Gaussian of ``sigma = h / 3``
truncated at ``|v - y| < h`` (the research code's range kernel), ``h`` being the bandwidth: two
plateaus closer than about ``2 sigma`` share one mode, plateaus ``h`` or more apart never
interact. The values are binned (bins of ``bin_fraction * h``, each bin standing for its values'
mean and count), so one iteration costs ``O(bins * 2 / bin_fraction)`` whatever the image size;
each pixel takes the mode of its bin. Modes closer than ``h / 2`` form one cluster. Spatial
grouping is left to the connected components of each cluster (:func:`connected_components`), so
that two instances that received one label far apart are still two segments.
"""

import math
from typing import Tuple

import torch


def mean_shift_modes(
    values: torch.Tensor,
    valid: torch.Tensor,
    bandwidth: float,
    bin_fraction: float = 0.05,
    max_value: float = 64.0,
    max_iters: int = 50,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean-shift of each image's label values (truncated Gaussian kernel, see module doc).

    Args:
        values: (B, N) label values (>= 0; clamped to ``[0, max_value]``).
        valid: (B, N) bool, the values that take part (e.g. not batch padding).
        bandwidth: h, the kernel's support radius (sigma = h / 3).
        bin_fraction: bin width as a fraction of h (in (0, 0.5]).
        max_iters: iterations at most; it stops earlier once no mode moves by 1e-3 h.

    Returns:
        ``(modes, clusters)``: (B, N) float mode of each value and (B, N) long cluster id
        (per image 0, 1, ... in increasing mode; modes closer than h / 2 share a cluster);
        -1 where not valid.
    """
    if not (bandwidth > 0 and 0 < bin_fraction <= 0.5):
        raise ValueError(
            f"mean-shift needs bandwidth > 0 and 0 < bin_fraction <= 0.5, got "
            f"bandwidth={bandwidth}, bin_fraction={bin_fraction}"
        )
    return _mean_shift_modes(
        values, valid, float(bandwidth), float(bin_fraction), float(max_value), int(max_iters)
    )


@torch.jit.script_if_tracing
def _mean_shift_modes(
    values: torch.Tensor,
    valid: torch.Tensor,
    bandwidth: float,
    bin_fraction: float,
    max_value: float,
    max_iters: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`mean_shift_modes` without the argument checks; scripted when traced (the number
    of occupied bins and of iterations depend on the data)."""
    b, dev = values.size(0), values.device
    bw = bandwidth * bin_fraction
    nb = int(max_value / bw) + 1
    v = values.float().clamp(0, max_value)
    bins = torch.round(v / bw).long().clamp(0, nb - 1)
    bins = torch.where(valid, bins, torch.full_like(bins, nb))  # invalid -> spill bin
    w = valid.float()
    count = torch.zeros(b, nb + 1, device=dev).scatter_add_(1, bins, w)[:, :nb]
    total = torch.zeros(b, nb + 1, device=dev).scatter_add_(1, bins, v * w)[:, :nb]
    occupied = count > 0
    centres = torch.arange(nb, device=dev, dtype=torch.float32) * bw
    point = torch.where(occupied, total / count.clamp(min=1), centres.expand(b, nb))
    k = math.ceil(1.0 / bin_fraction) + 1
    band = torch.arange(-k, k + 1, device=dev)
    sigma = bandwidth / 3.0
    # iterate on the occupied bins only: (B, M) queries, M = most occupied bins of an image
    m = max(int(occupied.sum(1).max().item()), 1)
    q = torch.sort(occupied.float(), dim=1, descending=True, stable=True)[1][:, :m]
    q_ok = occupied.gather(1, q)
    y = point.gather(1, q)
    for _it in range(max_iters):
        j = torch.round(y / bw).long()[..., None] + band  # (B, M, 2k+1) bins near y
        inside = (j >= 0) & (j < nb)
        j = j.clamp(0, nb - 1).view(b, -1)
        cj = count.gather(1, j).view(b, m, -1) * inside
        pj = point.gather(1, j).view(b, m, -1)
        d = pj - y[..., None]
        kern = cj * torch.exp(-0.5 * (d / sigma) ** 2) * (d.abs() < bandwidth)
        s0 = kern.sum(-1)
        y_new = torch.where(q_ok & (s0 > 0), (kern * pj).sum(-1) / s0.clamp(min=1e-12), y)
        done = ((y_new - y).abs() < 1e-3 * bandwidth).all()
        y = y_new
        if done:
            break
    y = point.scatter(1, q, y)
    # cluster the modes of the occupied bins: sort, start a new cluster at gaps >= h / 2
    ys = torch.where(occupied, y, torch.full_like(y, float("inf")))
    sorted_y, order = ys.sort(dim=1)
    gap = torch.cat([torch.zeros(b, 1, device=dev), sorted_y.diff(dim=1)], 1)
    new = (gap >= bandwidth / 2) & torch.isfinite(sorted_y)
    cid_sorted = new.long().cumsum(1)
    bin_cluster = torch.empty_like(cid_sorted).scatter_(1, order, cid_sorted)
    safe = bins.clamp(max=nb - 1)
    modes = torch.where(valid, y.gather(1, safe), torch.zeros_like(v))
    clusters = torch.where(valid, bin_cluster.gather(1, safe), torch.full_like(bins, -1))
    return modes, clusters


@torch.jit.script_if_tracing
def connected_components(labels: torch.Tensor, max_iters: int = 10000) -> torch.Tensor:
    """4-connected components of equal labels, batched (min-label propagation with pointer
    jumping).

    Args:
        labels: (B, H, W) long; pixels with a label < 0 belong to no component.

    Returns:
        (B, H, W) long: each component is named by the smallest flat index
        ``(b * H + y) * W + x`` of its pixels; -1 where ``labels < 0``. Scripted when traced
        (the number of iterations depends on the data).
    """
    b, h, w = labels.size(0), labels.size(1), labels.size(2)
    n = b * h * w
    fg = labels >= 0
    idx = torch.arange(n, device=labels.device).view(b, h, w)
    comp = torch.where(fg, idx, torch.full_like(idx, n))
    right = fg[:, :, :-1] & (labels[:, :, :-1] == labels[:, :, 1:])
    down = fg[:, :-1, :] & (labels[:, :-1, :] == labels[:, 1:, :])
    fg_flat = fg.reshape(-1)
    for _it in range(max_iters):
        new = comp.clone()
        new[:, :, :-1] = torch.where(
            right, torch.minimum(new[:, :, :-1], comp[:, :, 1:]), new[:, :, :-1]
        )
        new[:, :, 1:] = torch.where(
            right, torch.minimum(new[:, :, 1:], comp[:, :, :-1]), new[:, :, 1:]
        )
        new[:, :-1, :] = torch.where(
            down, torch.minimum(new[:, :-1, :], comp[:, 1:, :]), new[:, :-1, :]
        )
        new[:, 1:, :] = torch.where(
            down, torch.minimum(new[:, 1:, :], comp[:, :-1, :]), new[:, 1:, :]
        )
        flat = new.reshape(-1)
        for _jump in range(4):  # pointer jumping: a pixel takes the label of its label's pixel
            flat = torch.where(fg_flat, flat[flat.clamp(max=n - 1)], flat)
        new = flat.view(b, h, w)
        if torch.equal(new, comp):
            break
        comp = new
    return torch.where(fg, comp, torch.full_like(comp, -1))
