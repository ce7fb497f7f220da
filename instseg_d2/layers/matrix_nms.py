"""Matrix NMS and point NMS (SOLO, SOLOv2): mask-level suppression without sequential loops."""

import torch
import torch.nn.functional as F

from .masks import mask_iou_matrix


def point_nms(heat: torch.Tensor, kernel: int = 2) -> torch.Tensor:
    """Keep only local maxima of a score map, zero elsewhere (SOLO's "point NMS").

    With ``kernel=2`` (the reference's only value) a cell is kept when its score is >= the scores
    of its top, left and top-left neighbours: a 2x2 max-pool with stride 1 and padding 1 whose
    output is cropped to the input's size. An odd ``kernel`` gives the usual centred window.

    Args:
        heat: (N, C, H, W) scores (probabilities).
        kernel: window size >= 1.

    Returns:
        (N, C, H, W): ``heat`` where it equals the window maximum, 0 elsewhere.
    """
    if heat.dim() != 4:
        raise ValueError(f"point_nms expects (N, C, H, W), got {tuple(heat.shape)}")
    if kernel < 1:
        raise ValueError(f"point_nms: kernel must be >= 1, got {kernel}")
    h, w = heat.shape[-2:]
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2)[..., :h, :w]
    return heat * (hmax == heat).to(heat.dtype)


def matrix_nms(
    masks: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    areas: torch.Tensor = None,
) -> torch.Tensor:
    """Matrix NMS (SOLOv2, Wang et al. 2020): decay every score in one parallel step.

    Predictions must be sorted by decreasing score. For prediction ``j`` the decay is

        decay_j = min(1, min_{i < j, label_i = label_j} f(iou_ij) / f(comp_i)),
        comp_i  = max_{k < i, label_k = label_i} iou_ki   (0 if there is no such k),

    i.e. how much each higher-scoring mask ``i`` of the same class suppresses ``j``, compensated
    by how much ``i`` is itself suppressed. ``f`` is the gaussian ``exp(-sigma * iou^2)`` or the
    linear ``1 - iou``. The cap at 1 is what the reference code computes (its minimum runs over
    all pairs, those that do not suppress contributing values >= 1, the first row exactly 1).
    For the linear kernel a suppressor that duplicates an earlier mask (``comp_i = 1``) has its
    denominator clamped to 1e-6 instead of dividing by zero.

    Args:
        masks: (N, H, W) binary masks, sorted by decreasing score.
        labels: (N,) class of each mask.
        scores: (N,) scores, decreasing.
        kernel: "gaussian" or "linear".
        sigma: gaussian parameter (paper: 2.0).
        areas: optional (N,) mask areas.

    Returns:
        (N,) decayed scores ``scores * decay``.
    """
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"matrix_nms: kernel must be 'gaussian' or 'linear', got {kernel!r}")
    n = scores.shape[0]
    iou = mask_iou_matrix(masks, areas=areas)
    # pair[i, j]: i scores higher than j and has the same class, so i may suppress j
    pair = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(diagonal=1)
    pair &= labels[:, None] == labels[None, :]
    iou = torch.where(pair, iou, torch.zeros_like(iou))
    # (N,) how much each i is overlapped by a better one (a row of 0s: also defined for N = 0)
    comp = torch.cat([iou.new_zeros(1, n), iou]).max(dim=0).values
    if kernel == "gaussian":
        ratio = torch.exp(-sigma * (iou**2 - comp[:, None] ** 2))
    else:
        ratio = (1 - iou) / (1 - comp[:, None]).clamp(min=1e-6)
    ratio = torch.where(pair, ratio, torch.ones_like(ratio))
    decay = torch.cat([ratio.new_ones(1, n), ratio]).min(dim=0).values
    return scores * decay
