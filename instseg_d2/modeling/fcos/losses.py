"""FCOS losses: focal classification, centre-ness-weighted (G)IoU regression, quality BCE."""

from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss_jit


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all workers (itself in single-process runs)."""
    x = x.detach().float()
    world = comm.get_world_size()
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x = x / world
    return x


def ctrness_targets(reg_targets: torch.Tensor) -> torch.Tensor:
    """Centre-ness ``sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b))`` of (P, 4) ltrb targets."""
    if len(reg_targets) == 0:
        return reg_targets.new_zeros(0)
    lr, tb = reg_targets[:, [0, 2]], reg_targets[:, [1, 3]]
    c = (lr.min(dim=1).values / lr.max(dim=1).values) * (
        tb.min(dim=1).values / tb.max(dim=1).values
    )
    return torch.sqrt(c)


def ltrb_iou(pred: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of boxes given as (l, t, r, b) distances from the same location.

    IoU is smoothed as ``(I + 1) / (U + 1)`` (AdelaiDet), GIoU = IoU - (C - U) / C with C the
    area of the smallest enclosing box.

    Args:
        pred, target: (P, 4) non-negative.

    Returns:
        ious, gious: (P,) each.
    """
    pl, pt, pr, pb = pred.unbind(dim=1)
    tl, tt, tr, tb = target.unbind(dim=1)
    area_p = (pl + pr) * (pt + pb)
    area_t = (tl + tr) * (tt + tb)
    inter = (torch.min(pl, tl) + torch.min(pr, tr)) * (torch.min(pt, tt) + torch.min(pb, tb))
    union = area_p + area_t - inter
    enclose = (torch.max(pl, tl) + torch.max(pr, tr)) * (torch.max(pt, tt) + torch.max(pb, tb))
    ious = (inter + 1.0) / (union + 1.0)
    gious = ious - (enclose - union) / enclose
    return ious, gious


def loc_loss(ious: torch.Tensor, gious: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample regression loss: "giou" 1 - GIoU, "iou" -log IoU, "linear_iou" 1 - IoU."""
    if kind == "giou":
        return 1.0 - gious
    if kind == "iou":
        return -torch.log(ious)
    if kind == "linear_iou":
        return 1.0 - ious
    raise ValueError(f"MODEL.FCOS.LOC_LOSS_TYPE must be giou, iou or linear_iou, got {kind!r}")


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float, gamma: float
) -> torch.Tensor:
    """Summed sigmoid focal loss of (M, C) logits against labels (M,) (C = background)."""
    target = torch.zeros_like(logits)
    fg = labels < logits.shape[1]
    target[fg.nonzero().squeeze(1), labels[fg]] = 1.0
    return sigmoid_focal_loss_jit(logits, target, alpha=alpha, gamma=gamma, reduction="sum")


def box_losses(
    reg_pred: torch.Tensor,
    reg_targets: torch.Tensor,
    quality_pred: torch.Tensor,
    ctr_targets: torch.Tensor,
    num_pos_avg: float,
    loss_denorm: float,
    box_quality: str = "ctrness",
    loc_loss_type: str = "giou",
):
    """Regression and quality losses of the positive locations.

    Args:
        reg_pred, reg_targets: (P, 4) ltrb in stride units; quality_pred: (P,) logits.
        ctr_targets: (P,) centre-ness targets (:func:`ctrness_targets`).
        num_pos_avg: number of positives averaged over workers (>= 1).
        loss_denorm: sum of the centre-ness targets averaged over workers (> 0).

    Returns:
        ``{"loss_fcos_loc", "loss_fcos_ctr"}`` for "ctrness" quality: the regression loss
        weighted by centre-ness and divided by ``loss_denorm``, and the centre-ness BCE divided
        by ``num_pos_avg``; ``{"loss_fcos_loc", "loss_fcos_iou"}`` for "iou" quality, both
        divided by ``num_pos_avg``, the quality target being the IoU of the regressed box.
    """
    ious, gious = ltrb_iou(reg_pred, reg_targets)
    per_pos = loc_loss(ious, gious, loc_loss_type)
    bce = F.binary_cross_entropy_with_logits
    if box_quality == "ctrness":
        return {
            "loss_fcos_loc": (per_pos * ctr_targets).sum() / loss_denorm,
            "loss_fcos_ctr": bce(quality_pred, ctr_targets, reduction="sum") / num_pos_avg,
        }
    if box_quality == "iou":
        return {
            "loss_fcos_loc": per_pos.sum() / num_pos_avg,
            "loss_fcos_iou": bce(quality_pred, ious.detach(), reduction="sum") / num_pos_avg,
        }
    raise ValueError(f"MODEL.FCOS.BOX_QUALITY must be 'ctrness' or 'iou', got {box_quality!r}")
