"""BlendMask's blender: crop the bases per instance and mix them with its attention maps."""

from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Instances
from torch import nn

from instseg_d2.layers import split_per_image


def blend(rois: torch.Tensor, attns: torch.Tensor, attn_size: int, interp: str = "bilinear"):
    """Mask logits ``sum_k softmax_k(resize(a_k)) * r_k`` (the paper's blending, Eq. 2-3).

    Args:
        rois: (R, K, S, S) bases cropped to each instance's box.
        attns: (R, K * M * M) attention logits of each instance (M = ``attn_size``).

    Returns:
        (R, S, S) mask logits.
    """
    r, k, s, _ = rois.shape
    a = attns.reshape(r, k, attn_size, attn_size)
    a = F.interpolate(a, (s, s), mode=interp).softmax(dim=1)  # over the K bases
    return (rois * a).sum(dim=1)


class Blender(nn.Module):
    """RoIAlign(V2) of the bases to ``resolution`` x ``resolution`` and :func:`blend`.

    Training (:meth:`loss`): the bases are cropped with the **GT box** of each FCOS positive
    location and blended with that location's attention; the per-pixel BCE against the GT mask
    cropped and resized to the same grid, averaged per instance, is weighted by the location's
    centre-ness target and divided by their sum. Inference (:meth:`forward`): crops with the
    predicted boxes, sigmoid, ``pred_masks`` (R, 1, S, S) ready for ``detector_postprocess``.
    """

    @configurable
    def __init__(
        self,
        *,
        resolution: int = 56,
        attn_size: int = 14,
        num_bases: int = 4,
        pooler_scales=(0.25,),
        sampling_ratio: int = 1,
        pooler_type: str = "ROIAlignV2",
        top_interp: str = "bilinear",
    ):
        super().__init__()
        self.resolution = resolution
        self.attn_size = attn_size
        self.attn_len = num_bases * attn_size * attn_size
        self.top_interp = top_interp
        self.pooler = ROIPooler(
            output_size=resolution,
            scales=tuple(pooler_scales),
            sampling_ratio=sampling_ratio,
            pooler_type=pooler_type,
            canonical_level=2,
        )

    @classmethod
    def from_config(cls, cfg):
        b = cfg.MODEL.BLENDMASK
        return {
            "resolution": b.BOTTOM_RESOLUTION,
            "attn_size": b.ATTN_SIZE,
            "num_bases": cfg.MODEL.BASIS_MODULE.NUM_BASES,
            "pooler_scales": b.POOLER_SCALES,
            "sampling_ratio": b.POOLER_SAMPLING_RATIO,
            "pooler_type": b.POOLER_TYPE,
            "top_interp": b.TOP_INTERP,
        }

    def loss(
        self, bases: torch.Tensor, pos: Instances, loss_denorm: float, gt_instances: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """``loss_mask`` of the positive locations ``pos`` (fields ``gt_inds``, ``top_feats``,
        ``gt_ctrs``); ``loss_denorm`` = sum of centre-ness targets (averaged over workers)."""
        if len(pos) == 0:
            return {"loss_mask": bases.sum() * 0 + pos.top_feats.sum() * 0}
        rois = self.pooler([bases], [x.gt_boxes for x in gt_instances])[pos.gt_inds]
        logits = blend(rois, pos.top_feats, self.attn_size, self.top_interp)
        targets = torch.cat(
            [
                x.gt_masks.crop_and_resize(x.gt_boxes.tensor, self.resolution).to(logits.device)
                for x in gt_instances
                if len(x) > 0
            ]
        )[pos.gt_inds].to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return {"loss_mask": (bce.flatten(1).mean(dim=1) * pos.gt_ctrs).sum() / loss_denorm}

    def forward(self, bases: torch.Tensor, detections: List[Instances]) -> List[Instances]:
        """Add ``pred_masks`` (R, 1, S, S) probabilities to each image's detections."""
        rois = self.pooler([bases], [d.pred_boxes for d in detections])
        attns = torch.cat([d.top_feat for d in detections])
        probs = blend(rois, attns, self.attn_size, self.top_interp).sigmoid()[:, None]
        for d, p in zip(detections, split_per_image(probs, detections)):
            d.pred_masks = p
        return detections
