"""Ground truth of DVIS at the label-map resolution, and candidate-to-GT matching."""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from instseg_d2.layers import mask_iou_matrix


@dataclass
class LabelTargets:
    """Targets of the variational loss for a batch, at stride ``s`` (label-map size (h, w)).

    Attributes:
        ids: (B, h, w) long, 0 = background, k + 1 = visible part of GT instance k.
        valid: (B, h, w) bool, inside the image (not batch padding).
        weights: (B, h, w) float, per-pixel weights of the binary term.
        masks: per image (G_i, h, w) bool, ``ids == k + 1`` for every GT instance k.
    """

    ids: torch.Tensor
    valid: torch.Tensor
    weights: torch.Tensor
    masks: List[torch.Tensor]


def label_targets(
    gt_masks: Sequence[torch.Tensor],
    image_sizes: Sequence[Tuple[int, int]],
    padded_size: Tuple[int, int],
    stride: int = 4,
    size_weight_max: float = 10.0,
) -> LabelTargets:
    """Instance-id maps at stride ``stride`` from full-resolution GT masks.

    Each mask is average-pooled over ``stride x stride`` cells and thresholded at 0.5. Instances
    are painted largest first, so that a smaller instance overwrites a larger one where they
    overlap (research code). The binary-term weight of the pixels of an instance (and of the
    background) is ``clip(cbrt(n_valid / (area + 1)), 1, size_weight_max)``, which lifts small
    instances (research code); ``size_weight_max = 1`` gives uniform weights.

    Args:
        gt_masks: per image (G_i, H_i, W_i) bool/uint8 masks at the image size (unpadded).
        image_sizes: per image (H_i, W_i).
        padded_size: (H, W) of the padded batch, divisible by ``stride``.
    """
    hp, wp = padded_size
    if hp % stride or wp % stride:
        raise ValueError(f"padded size {padded_size} is not divisible by stride {stride}")
    h, w = hp // stride, wp // stride
    ids_all, valid_all, weights_all, masks_all = [], [], [], []
    for masks, (hi, wi) in zip(gt_masks, image_sizes):
        device = masks.device
        valid = valid_mask([(hi, wi)], (h, w), stride, device)[0]
        ids = torch.zeros(h, w, dtype=torch.long, device=device)
        g = masks.shape[0]
        if g:
            m = F.pad(masks.float(), (0, wp - masks.shape[2], 0, hp - masks.shape[1]))
            small = F.avg_pool2d(m[:, None], stride)[:, 0] >= 0.5  # (G, h, w)
            for k in torch.argsort(masks.flatten(1).sum(1), descending=True).tolist():
                ids[small[k]] = k + 1
        inst = ids[None] == torch.arange(1, g + 1, device=device)[:, None, None]
        n_valid = valid.sum().float()
        all_masks = torch.cat([(ids == 0)[None] & valid[None], inst])
        area = all_masks.flatten(1).sum(1).float()
        wk = (n_valid / (area + 1)).pow(1.0 / 3).clamp(1.0, max(size_weight_max, 1.0))
        weights = (all_masks.float() * wk[:, None, None]).sum(0)
        ids_all.append(ids)
        valid_all.append(valid)
        weights_all.append(weights)
        masks_all.append(inst)
    return LabelTargets(
        torch.stack(ids_all), torch.stack(valid_all), torch.stack(weights_all), masks_all
    )


def valid_mask(image_sizes: Sequence[Tuple[int, int]], shape, stride: int, device) -> torch.Tensor:
    """(B, h, w) bool: the label-map pixels (of a padded batch with label map ``shape`` (h, w))
    that lie inside each image of ``image_sizes`` (H_i, W_i), i.e. the first ceil(H_i / stride)
    rows and ceil(W_i / stride) columns (tensor arithmetic: sizes stay dynamic when traced)."""
    h, w = shape
    rows = torch.arange(h, device=device)[:, None]
    cols = torch.arange(w, device=device)[None, :]
    return torch.stack([(rows * stride < hi) & (cols * stride < wi) for hi, wi in image_sizes])


def verification_targets(
    cand_masks: torch.Tensor,
    gt_masks: torch.Tensor,
    gt_classes: torch.Tensor,
    num_classes: int,
    iou_high: float,
    iou_low: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class and IoU targets of the candidates of one image.

    Each candidate is matched to the GT instance of highest mask IoU. Its class target is that
    GT's class when the IoU is >= ``iou_high``, background (``num_classes``) when < ``iou_low``,
    and -1 (ignored by the classifier) in between. Its IoU target is that IoU.

    Args:
        cand_masks: (R, h, w) bool; gt_masks: (G, h, w) bool; gt_classes: (G,) long.

    Returns:
        ``(classes, ious)``: (R,) long and (R,) float.
    """
    r = cand_masks.shape[0]
    if gt_masks.shape[0] == 0:
        iou = torch.zeros(r, device=cand_masks.device)
        return torch.full((r,), num_classes, dtype=torch.long, device=iou.device), iou
    iou, idx = mask_iou_matrix(cand_masks, gt_masks).max(dim=1)
    classes = gt_classes[idx].clone()
    classes[iou < iou_high] = -1
    classes[iou < iou_low] = num_classes
    return classes, iou
