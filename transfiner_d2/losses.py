"""The losses of Mask Transfiner besides Mask R-CNN's mask BCE (detectron2's mask_rcnn_loss).

Weights are applied by the caller (``MODEL.TRANSFINER.*_LOSS_WEIGHT``).
"""

import torch
import torch.nn.functional as F


def smoothed_dice_loss(probs: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0):
    """Mean over instances of ``1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)``.

    The reference's dice for the incoherence map: linear sums (not the squared sums of
    ``instseg_d2.layers.dice_loss``) and additive smoothing in numerator and denominator.

    Args:
        probs, targets: (N, ...) probabilities and binary targets.

    Returns:
        scalar (0 for N = 0).
    """
    n = probs.shape[0]
    if n == 0:
        return probs.sum() * 0
    p, t = probs.reshape(n, -1), targets.reshape(n, -1).to(probs.dtype)
    dice = (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)
    return (1 - dice).sum() / n


def incoherence_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0):
    """Dice (on sigmoid probabilities) + mean BCE of the incoherence map (paper L_inc).

    The reference applies ``F.binary_cross_entropy`` to sigmoid outputs; the same quantity is
    computed here from the logits, which is numerically stable.

    Args:
        logits: (N, S, S) incoherence logits.
        targets: (N, S, S) binary incoherent-region ground truth.
    """
    if logits.numel() == 0:
        return logits.sum() * 0
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
    return smoothed_dice_loss(logits.sigmoid(), targets, smooth) + bce


def boundary_loss(logits: torch.Tensor, targets: torch.Tensor):
    """Mean BCE of the boundary logits (N, S, S) against the binary contour (N, S, S)."""
    if logits.numel() == 0:
        return logits.sum() * 0
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def semantic_loss(logits: torch.Tensor, targets: torch.Tensor):
    """Mean BCE of the P2 foreground logits (B, 1, h, w) against the union of instances."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def refine_loss(probs: torch.Tensor, labels: torch.Tensor):
    """Mean L1 between refined probabilities and binary labels of all tokens (paper L_refine).

    Args:
        probs, labels: (R, T) for R refined instances with T tokens each.
    """
    return F.l1_loss(probs, labels.to(probs.dtype))
