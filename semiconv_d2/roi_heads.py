"""StandardROIHeads + the semi-convolutional embedding subnet, its loss and its RoI crops."""

from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import ImageList, Instances

from .embedding import SemiConvEmbeddingHead
from .losses import embedding_loss
from .mask_head import SemiConvMaskHead

# prefix of the embedding maps added to the features dict handed to StandardROIHeads
_EMB = "semiconv_psi_"


@ROI_HEADS_REGISTRY.register()
class SemiConvROIHeads(StandardROIHeads):
    """Mask R-CNN's RoI heads with semi-convolutional embeddings (Novotny et al., sec. 3.5).

    The embedding subnet runs on the mask head's FPN levels (ROI_HEADS.IN_FEATURES); its maps
    Psi are cropped per RoI by RoIAlign at the mask resolution (2 x ROI_MASK_HEAD
    .POOLER_RESOLUTION, with the mask pooler's level assignment) and handed to the
    :class:`SemiConvMaskHead`. In training it adds ``loss_embed`` (eq. 5) on the ground truth.
    The box branch is StandardROIHeads' own.
    """

    @configurable
    def __init__(
        self,
        *,
        embedding_head: SemiConvEmbeddingHead,
        embed_pooler: ROIPooler,
        embed_loss_weight: float = 1.0,
        embed_loss_levels: str = "assigned",
        **kwargs,
    ):
        """
        Args:
            embedding_head: the shared subnet giving Psi on every level of mask_in_features.
            embed_pooler: RoIAlign of Psi to the mask resolution, same levels as the mask pooler.
            embed_loss_weight: weight of ``loss_embed``.
            embed_loss_levels: "assigned" (each instance on its pooler level) or "all".
            kwargs: as :class:`StandardROIHeads`; mask_head must be a SemiConvMaskHead.
        """
        super().__init__(**kwargs)
        if not self.mask_on or not isinstance(self.mask_head, SemiConvMaskHead):
            raise ValueError(
                "SemiConvROIHeads needs MODEL.MASK_ON=True and ROI_MASK_HEAD.NAME="
                f"'SemiConvMaskHead', got mask head {type(getattr(self, 'mask_head', None))}"
            )
        if self.mask_pooler is None:
            raise ValueError("SemiConvROIHeads needs ROI_MASK_HEAD.POOLER_TYPE (RoIAlign)")
        if embed_loss_levels not in ("assigned", "all"):
            raise ValueError(
                f"MODEL.SEMICONV.EMBED_LOSS_LEVELS={embed_loss_levels!r}: 'assigned' or 'all'"
            )
        self.embedding_head = embedding_head
        self.embed_pooler = embed_pooler
        self.embed_loss_weight = embed_loss_weight
        self.embed_loss_levels = embed_loss_levels

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        ret["embedding_head"] = SemiConvEmbeddingHead(cfg, input_shape)
        ret["embed_pooler"] = ROIPooler(
            # the mask head (conv + deconv x2) predicts at twice its pooler resolution
            output_size=2 * cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
            scales=tuple(1.0 / input_shape[k].stride for k in in_features),
            sampling_ratio=cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE,
        )
        ret["embed_loss_weight"] = cfg.MODEL.SEMICONV.EMBED_LOSS_WEIGHT
        ret["embed_loss_levels"] = cfg.MODEL.SEMICONV.EMBED_LOSS_LEVELS
        return ret

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        """StandardROIHeads.forward, with Psi computed once and passed along in ``features``."""
        psi = self.embedding_head([features[f] for f in self.mask_in_features])
        with_psi = dict(features)
        with_psi.update({_EMB + f: p for f, p in zip(self.mask_in_features, psi)})
        instances, losses = super().forward(images, with_psi, proposals, targets)
        if self.training:
            levels = self._gt_levels(targets) if self.embed_loss_levels == "assigned" else None
            loss = embedding_loss(psi, self.embedding_head.strides, targets, levels)
            losses["loss_embed"] = loss * self.embed_loss_weight
        return instances, losses

    def _gt_levels(self, targets: List[Instances]) -> List[torch.Tensor]:
        """Per image, the index of the level that the mask pooler assigns each GT box to."""
        p = self.embed_pooler
        levels = assign_boxes_to_levels(
            [t.gt_boxes for t in targets],
            p.min_level,
            p.max_level,
            p.canonical_box_size,
            p.canonical_level,
        )
        return list(levels.split([len(t) for t in targets]))

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """StandardROIHeads._forward_mask, also cropping Psi for the mask head."""
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        x = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        if all(_EMB + f in features for f in self.mask_in_features):
            psi = [features[_EMB + f] for f in self.mask_in_features]
        else:  # forward_with_given_boxes called directly (e.g. test-time augmentation)
            psi = self.embedding_head([features[f] for f in self.mask_in_features])
        return self.mask_head(x, instances, self.embed_pooler(psi, boxes))
