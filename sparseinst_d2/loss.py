"""Training targets and losses of SparseInst (paper Sec. 3.4, Eq. 3).

``L = lambda_cls * L_cls + lambda_mask * L_mask + lambda_s * L_s`` with

* ``L_cls``: sigmoid focal loss over all N queries x K classes (matched queries have their
  object's class, the others none), summed and divided by the number of objects;
* ``L_mask = 5 * BCE + 2 * dice`` on the matched masks (BCE averaged over pixels, dice summed
  over objects and divided by their number);
* ``L_s``: BCE of the matched queries' objectness against the IoU of their binarised mask with
  their object (IoU-aware objectness), averaged over the matched queries.

Targets: the objects' bitmasks, zero-padded to the batch's padded size and bilinearly resampled
to the prediction's resolution (stride 4), as the reference does.
"""

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.structures import Instances
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss
from torch import nn

from instseg_d2.layers import dice_loss, instance_bitmasks

from .matcher import SparseInstMatcher


def target_masks(
    instances: Sequence[Instances], padded_size: Sequence[int], out_size: Sequence[int]
) -> List[torch.Tensor]:
    """Objects' masks at the prediction's resolution.

    Args:
        instances: per image, ``gt_masks`` (BitMasks or PolygonMasks) of the (unpadded) image.
        padded_size: (H_pad, W_pad) of the batch tensor.
        out_size: (h, w) of the predicted masks.

    Returns:
        per image (G, h, w) float masks in [0, 1]: zero-padded to ``padded_size`` and resampled
        bilinearly (align_corners False) to ``out_size``.
    """
    out = []
    for inst in instances:
        padded = instance_bitmasks(inst, pad_to=tuple(padded_size)).float()
        if padded.shape[0] == 0:
            out.append(padded.new_zeros((0, int(out_size[0]), int(out_size[1]))))
            continue
        resized = F.interpolate(
            padded[:, None], size=tuple(out_size), mode="bilinear", align_corners=False
        )
        out.append(resized[:, 0])
    return out


def mask_iou(
    mask_logits: torch.Tensor, targets: torch.Tensor, pred_thr: float = 0.4, tgt_thr: float = 0.5
) -> torch.Tensor:
    """IoU of ``sigmoid(mask_logits) >= pred_thr`` with ``targets > tgt_thr``, row by row.

    Args:
        mask_logits, targets: (M, P).

    Returns:
        (M,) IoU in [0, 1] (``inter / (union + 1e-6)``).
    """
    p = (mask_logits.sigmoid() >= pred_thr).float()
    t = (targets > tgt_thr).float()
    inter = (p * t).sum(-1)
    union = p.sum(-1) + t.sum(-1) - inter
    return inter / (union + 1e-6)


class SparseInstCriterion(nn.Module):
    """Match predictions to objects, then the weighted losses ``loss_ce``, ``loss_mask``,
    ``loss_dice`` and ``loss_objectness``."""

    @configurable
    def __init__(
        self,
        *,
        matcher: SparseInstMatcher,
        num_classes: int,
        class_weight: float = 2.0,
        mask_pixel_weight: float = 5.0,
        mask_dice_weight: float = 2.0,
        objectness_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        dice_eps: float = 1e-4,
        iou_pred_threshold: float = 0.4,
        iou_target_threshold: float = 0.5,
    ):
        super().__init__()
        self.matcher = matcher
        self.num_classes = num_classes
        self.weights = {
            "loss_ce": class_weight,
            "loss_mask": mask_pixel_weight,
            "loss_dice": mask_dice_weight,
            "loss_objectness": objectness_weight,
        }
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.dice_eps = dice_eps
        self.iou_thresholds = (iou_pred_threshold, iou_target_threshold)

    @classmethod
    def from_config(cls, cfg):
        si = cfg.MODEL.SPARSE_INST
        return {
            "matcher": SparseInstMatcher(si.MATCHER.ALPHA, si.MATCHER.BETA, si.LOSS.DICE_EPS),
            "num_classes": si.DECODER.NUM_CLASSES,
            "class_weight": si.LOSS.CLASS_WEIGHT,
            "mask_pixel_weight": si.LOSS.MASK_PIXEL_WEIGHT,
            "mask_dice_weight": si.LOSS.MASK_DICE_WEIGHT,
            "objectness_weight": si.LOSS.OBJECTNESS_WEIGHT,
            "focal_alpha": si.LOSS.FOCAL_ALPHA,
            "focal_gamma": si.LOSS.FOCAL_GAMMA,
            "dice_eps": si.LOSS.DICE_EPS,
            "iou_pred_threshold": si.LOSS.IOU_PRED_THRESHOLD,
            "iou_target_threshold": si.LOSS.IOU_TARGET_THRESHOLD,
        }

    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[torch.Tensor],
        labels: List[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:  # fmt: skip
        """
        Args:
            outputs: the decoder's ``pred_logits`` (B, N, K), ``pred_masks`` (B, N, h, w),
                ``pred_objectness`` (B, N, 1).
            targets: per image (G_b, h, w) target masks (see :func:`target_masks`).
            labels: per image (G_b,) int64 classes.

        Returns:
            the four weighted losses.
        """
        logits, masks = outputs["pred_logits"], outputs["pred_masks"]
        objectness = outputs["pred_objectness"]
        indices = self.matcher(masks, logits, targets, labels)
        num = torch.as_tensor(
            [float(sum(len(lab) for lab in labels))], device=logits.device
        )  # objects in the batch, averaged over workers
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num)
        num = max(num.item() / comm.get_world_size(), 1.0)

        batch_idx = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(indices)])
        pred_idx = torch.cat([p for p, _ in indices])
        batch_idx, pred_idx = batch_idx.to(logits.device), pred_idx.to(logits.device)

        cls_targets = torch.zeros_like(logits)
        matched_labels = torch.cat([lab[t.to(lab.device)] for lab, (_, t) in zip(labels, indices)])
        cls_targets[batch_idx, pred_idx, matched_labels] = 1.0
        loss_ce = sigmoid_focal_loss(
            logits, cls_targets, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum"
        )
        losses = {"loss_ce": loss_ce / num}

        if len(pred_idx) == 0:
            zero = masks.sum() * 0.0
            losses.update(loss_mask=zero, loss_dice=zero, loss_objectness=objectness.sum() * 0.0)
        else:
            src = masks[batch_idx, pred_idx].flatten(1)
            tgt = torch.cat([tg[t.to(tg.device)] for tg, (_, t) in zip(targets, indices)])
            tgt = tgt.flatten(1).to(src.dtype)
            with torch.no_grad():
                iou = mask_iou(src, tgt, *self.iou_thresholds)
            obj = objectness[batch_idx, pred_idx, 0]
            losses["loss_mask"] = F.binary_cross_entropy_with_logits(src, tgt, reduction="mean")
            losses["loss_dice"] = (
                dice_loss(src.sigmoid(), tgt, eps=self.dice_eps, reduction="sum") / num
            )
            losses["loss_objectness"] = F.binary_cross_entropy_with_logits(
                obj, iou.to(obj.dtype), reduction="mean"
            )
        return {k: v * self.weights[k] for k, v in losses.items()}
