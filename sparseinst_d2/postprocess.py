"""NMS-free inference of SparseInst (paper Sec. 3.5): scores, maskness rescoring, mask resizing.

Plain tensor functions whose control flow does not depend on the data, so that a traced model
(``tools/export.py``) computes the same thing for any image.
"""

from typing import Tuple

import torch
import torch.nn.functional as F

from instseg_d2.layers import boxes_from_masks
from instseg_d2.utils.profiling import stage


def score_queries(
    cls_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    objectness_logits: torch.Tensor,
    cls_threshold: float,
    mask_threshold: float,
    max_detections: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Scores of the queries of one image, without NMS.

    ``s_i = max_k sqrt(p_i(k) * sigmoid(o_i))`` (the class of the max is the label); a query is
    kept if ``s_i > cls_threshold``; its score is then multiplied by the maskness, the mean
    probability of its mask over the pixels above ``mask_threshold``. With fewer
    ``max_detections`` than queries, only the ``max_detections`` highest ``s_i`` are
    considered (the reference has no limit; with its 100 queries and 100 detections there is
    none either, and the queries keep their order).

    Args:
        cls_logits: (N, K); mask_logits: (N, h, w); objectness_logits: (N, 1).

    Returns:
        rescored scores (Q,), labels (Q,) int64, mask probabilities (Q, h, w) and the bool
        ``keep`` (Q,), Q = min(N, max_detections), for the caller to apply.
    """
    probs = torch.sqrt(cls_logits.sigmoid() * objectness_logits.sigmoid())
    scores, labels = probs.max(dim=-1)
    if max_detections < scores.shape[0]:
        scores, idx = scores.topk(max_detections)
        labels, mask_logits = labels[idx], mask_logits[idx]
    keep = scores > cls_threshold
    masks = mask_logits.sigmoid()
    fg = (masks > mask_threshold).to(masks.dtype)
    maskness = (masks * fg).sum(dim=(1, 2)) / (fg.sum(dim=(1, 2)) + 1e-6)
    return scores * maskness, labels, masks, keep


def detect(
    cls_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    objectness_logits: torch.Tensor,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    cls_threshold: float,
    mask_threshold: float,
    max_detections: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The detections of one image: :func:`score_queries`, then :func:`masks_to_image` and
    the boxes of the masks.

    Args:
        cls_logits, mask_logits, objectness_logits: the decoder's outputs for this image.
        padded_size, image_size, output_size, mask_threshold: see :func:`masks_to_image`.
        cls_threshold, max_detections: see :func:`score_queries`.

    Returns:
        scores (M,), classes (M,) int64, masks (M, H_out, W_out) bool, boxes (M, 4) XYXY.
    """
    scores, classes, probs, keep = score_queries(
        cls_logits, mask_logits, objectness_logits, cls_threshold, mask_threshold, max_detections
    )
    scores, classes, probs = scores[keep], classes[keep], probs[keep]
    with stage("masks"):
        masks = masks_to_image(probs, padded_size, image_size, output_size, mask_threshold)
    return scores, classes, masks, boxes_from_masks(masks)


def masks_to_image(
    mask_probs: torch.Tensor,
    padded_size: Tuple[int, int],
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    mask_threshold: float,
) -> torch.Tensor:
    """Binary masks at ``output_size`` from mask probabilities of the padded batch.

    The probabilities are upsampled bilinearly to the padded input size, cropped to the image's
    own (unpadded) size, resized bilinearly to ``output_size`` when it differs, and binarised.

    Args:
        mask_probs: (M, h, w) probabilities at the prediction's stride.
        padded_size: (H_pad, W_pad) of the network input.
        image_size: (H_img, W_img) of this image inside it.
        output_size: (H_out, W_out) wanted (the original image's size).
        mask_threshold: probability threshold.

    Returns:
        (M, H_out, W_out) bool.
    """
    m = F.interpolate(mask_probs[:, None], size=padded_size, mode="bilinear", align_corners=False)
    m = m[:, :, : image_size[0], : image_size[1]]
    if output_size[0] != image_size[0] or output_size[1] != image_size[1]:
        m = F.interpolate(m, size=output_size, mode="bilinear", align_corners=False)
    return m[:, 0] > mask_threshold
