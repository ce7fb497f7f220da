"""SOLO's losses: focal loss on the category grid, dice loss on the masks of positive cells."""

from typing import Dict, List

import torch
import torch.nn.functional as F
from fvcore.nn import sigmoid_focal_loss

from instseg_d2.layers import dice_loss


def category_loss(
    cate_logits: List[torch.Tensor],
    labels: List[torch.Tensor],
    num_classes: int,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Sigmoid focal loss summed over every cell and class of every level and image,
    divided by (number of positive cells + 1), as the references (not averaged over workers).

    Args:
        cate_logits: per level (N, C, S, S).
        labels: per level (N, S, S) int64, ``num_classes`` for background.
    """
    logits = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, num_classes) for x in cate_logits])
    flat = torch.cat([lab.reshape(-1) for lab in labels])
    pos = flat < num_classes
    onehot = F.one_hot(flat.clamp(max=num_classes), num_classes + 1)[:, :num_classes]
    loss = sigmoid_focal_loss(
        logits.float(), onehot.float(), alpha=alpha, gamma=gamma, reduction="sum"
    )
    return loss / (pos.sum() + 1)


def solo_losses(
    cate_logits: List[torch.Tensor],
    labels: List[torch.Tensor],
    mask_probs: List[torch.Tensor],
    mask_targets: List[torch.Tensor],
    num_classes: int,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    focal_weight: float = 1.0,
    dice_weight: float = 3.0,
    dice_eps: float = 2e-3,
) -> Dict[str, torch.Tensor]:
    """``loss_cate`` (focal) and ``loss_ins`` (dice x ``dice_weight``).

    Args:
        cate_logits, labels: see :func:`category_loss`.
        mask_probs, mask_targets: per level (P_l, h_l, w_l) probabilities and binary targets of
            that level's positive cells; the dice losses of all levels are averaged together.
            Without any positive cell ``loss_ins`` is 0.
    """
    per_cell = [
        dice_loss(p.float(), t, eps=dice_eps) for p, t in zip(mask_probs, mask_targets) if len(p)
    ]
    loss_ins = torch.cat(per_cell).mean() if per_cell else cate_logits[0].sum() * 0.0
    loss_cate = category_loss(cate_logits, labels, num_classes, focal_alpha, focal_gamma)
    return {"loss_ins": loss_ins * dice_weight, "loss_cate": loss_cate * focal_weight}
