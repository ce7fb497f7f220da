"""Losses of MaskLab's mask head and dense branches."""

import torch
import torch.nn.functional as F


def mask_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel sigmoid binary cross-entropy, averaged over all boxes and pixels.

    Args:
        logits: (R, 1, S, S) mask logits (coarse or refined).
        targets: (R, S, S) {0, 1} ground-truth crops.
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[:, 0], targets.to(logits.dtype))


def dense_ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy averaged over the locations whose target is not -1 (ignored).

    Args:
        logits: (N, C, H, W).
        targets: (N, H, W) int64 in {-1, 0..C-1}.
    """
    valid = targets >= 0
    n = int(valid.sum())
    if n == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum") / n
