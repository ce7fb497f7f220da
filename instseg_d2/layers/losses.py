"""Losses shared by several methods."""

import torch


def dice_coefficient(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft dice coefficient ``2 sum(p t) / (sum(p^2) + sum(t^2) + eps)`` per instance.

    Args:
        probs: (N, ...) probabilities in [0, 1] (e.g. sigmoid of mask logits).
        targets: (N, ...) binary (or soft) targets of the same shape.
        eps: smoothing in the denominator. CondInst uses 1e-5, SparseInst 1e-4 and SOLO adds
            1e-3 to each sum of squares (``eps=2e-3``).

    Returns:
        (N,) dice coefficients.
    """
    if probs.shape != targets.shape:
        raise ValueError(f"dice: shapes differ, {tuple(probs.shape)} vs {tuple(targets.shape)}")
    n = probs.shape[0]
    p = probs.reshape(n, -1)
    t = targets.reshape(n, -1).to(p.dtype)
    inter = (p * t).sum(dim=1)
    union = (p * p).sum(dim=1) + (t * t).sum(dim=1) + eps
    return 2 * inter / union


def dice_loss(
    probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5, reduction: str = "none"
) -> torch.Tensor:
    """Dice loss ``1 - dice_coefficient`` (Milletari et al.), as CondInst, SOLO and SparseInst use.

    Args:
        probs, targets, eps: see :func:`dice_coefficient`.
        reduction: "none" (returns (N,)), "mean" or "sum".
    """
    loss = 1.0 - dice_coefficient(probs, targets, eps)
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    if reduction == "sum":
        return loss.sum()
    if reduction != "none":
        raise ValueError(f"dice_loss: unknown reduction {reduction!r}")
    return loss
