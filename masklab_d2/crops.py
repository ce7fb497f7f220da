"""Per-box "crop and resize" of dense maps (ROIAlign, ``aligned=True``) used by MaskLab's head."""

from typing import List

import torch
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.structures import Boxes
from torchvision.ops import roi_align


def crop_and_resize(
    features: torch.Tensor,
    boxes: List[Boxes],
    stride: int,
    size: int,
    sampling_ratio: int = 0,
) -> torch.Tensor:
    """Crop every box from its image's feature map and resize to ``size`` x ``size``.

    Args:
        features: (N, C, H, W) map of stride ``stride``.
        boxes: N Boxes in image coordinates (R boxes in all).

    Returns:
        (R, C, size, size).
    """
    rois = convert_boxes_to_pooler_format(boxes).to(features.dtype)
    return roi_align(features, rois, (size, size), 1.0 / stride, sampling_ratio, aligned=True)


def crop_class_channel(
    logits: torch.Tensor,
    boxes: List[Boxes],
    classes: torch.Tensor,
    stride: int,
    size: int,
    sampling_ratio: int = 0,
) -> torch.Tensor:
    """Crop, for every box, only the channel of its class (the semantic crop of MaskLab).

    The (image, class) pairs are treated as a batch of one-channel maps, so only R channels are
    resampled, not R x C.

    Args:
        logits: (N, C, H, W) semantic logits of stride ``stride``.
        boxes: N Boxes in image coordinates (R boxes in all).
        classes: (R,) int64 class index of each box, in [0, C).

    Returns:
        (R, 1, size, size).
    """
    n, c, h, w = logits.shape
    rois = convert_boxes_to_pooler_format(boxes).to(logits.dtype)
    if len(classes) != len(rois):
        raise ValueError(f"crop_class_channel: {len(rois)} boxes but {len(classes)} classes")
    checked = len(classes) and not torch.jit.is_tracing()  # (min of none fails in a trace)
    if checked and (classes.min() < 0 or classes.max() >= c):
        raise ValueError(f"crop_class_channel: class index outside [0, {c}): {classes.tolist()}")
    rois[:, 0] = rois[:, 0] * c + classes.to(rois.dtype)
    flat = logits.reshape(n * c, 1, h, w)
    return roi_align(flat, rois, (size, size), 1.0 / stride, sampling_ratio, aligned=True)
