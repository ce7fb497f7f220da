"""MaskLab's ROI heads: detectron2's StandardROIHeads (Faster R-CNN box branch, optionally with
deformable crop and resize) whose mask branch is :class:`MaskLabMaskHead`, trained on ground-truth
boxes instead of proposals."""

from typing import Dict, List, Optional

import torch
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
    StandardROIHeads,
)
from detectron2.structures import ImageList, Instances

from .deformable import DeformableCropAndResize
from .mask_head import MaskLabMaskHead


@ROI_HEADS_REGISTRY.register()
class MaskLabROIHeads(StandardROIHeads):
    """StandardROIHeads with MaskLab's mask branch.

    The mask head reads whole feature maps (dense semantic / direction logits, hypercolumn
    features), not pooled box features, so there is no mask pooler. In training it gets the
    ground-truth instances (paper, sec. 4.1: "only groundtruth boxes are used to train the
    branches that predict semantic segmentation logits and direction logits").
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        c = cfg.MODEL.MASKLAB
        if c.DEFORMABLE_CROP_AND_RESIZE:
            channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
            ret["box_pooler"] = DeformableCropAndResize(
                ret["box_pooler"],
                channels,
                sub_box_size=c.DEFORMABLE_SUB_BOX_SIZE,
                offset_scale=c.DEFORMABLE_OFFSET_SCALE,
                offset_dim=c.DEFORMABLE_OFFSET_DIM,
            )
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON:
            return {}
        if cfg.MODEL.KEYPOINT_ON:
            raise ValueError("MaskLabROIHeads does not support MODEL.KEYPOINT_ON")
        head_cls = ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)
        if not (isinstance(head_cls, type) and issubclass(head_cls, MaskLabMaskHead)):
            raise ValueError(
                "MaskLabROIHeads needs MODEL.ROI_MASK_HEAD.NAME 'MaskLabMaskHead', got "
                f"{cfg.MODEL.ROI_MASK_HEAD.NAME!r}"
            )
        head = head_cls(cfg, dict(input_shape))
        in_features = list(dict.fromkeys(head.dense_in_features + head.hypercolumn_features))
        return {"mask_in_features": in_features, "mask_pooler": None, "mask_head": head}

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        """As StandardROIHeads.forward, but the mask branch trains on ``targets``."""
        if not self.training:
            return super().forward(images, features, proposals, targets)
        if not targets:
            raise ValueError("MaskLabROIHeads needs 'targets' in training")
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_box(features, proposals)
        losses.update(self._forward_mask(features, targets))
        return proposals, losses

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """Run the mask head on ground-truth instances (training) or detections (inference)."""
        if not self.mask_on:
            return {} if self.training else instances
        return self.mask_head({f: features[f] for f in self.mask_in_features}, instances)
