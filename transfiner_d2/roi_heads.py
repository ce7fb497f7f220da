"""RoI heads of Mask Transfiner: detectron2's StandardROIHeads whose mask branch also gets the
semantically refined P2, the quadtree-level RoI features and (in training) the GT targets."""

from functools import partial
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import ImageList, Instances

from .losses import semantic_loss
from .mask_head import TransfinerFeatures
from .pooler import NodeFeaturePooler, SemanticRefinement, first_per_image
from .targets import semantic_targets


@ROI_HEADS_REGISTRY.register()
class TransfinerROIHeads(StandardROIHeads):
    """:class:`StandardROIHeads` + Mask Transfiner's mask branch inputs.

    For the mask branch, besides the usual 14 x 14 RoI features, the finest FPN level is
    refined (``semantic_head``: P2' = P2 + f(P2), trained with a foreground BCE), and the first
    ``TRAIN/TEST_MAX_INSTANCES`` boxes of every image get RoI features at each quadtree level
    (``node_pooler``, from P2' and the coarser levels). ``ROI_MASK_HEAD.NAME`` must be
    ``TransfinerMaskHead``.

    Checkpoints of the reference implementation load directly (their keys are renamed while
    loading by the converter of :mod:`transfiner_d2.checkpoint`).
    """

    @configurable
    def __init__(
        self,
        *,
        semantic_head: Optional[SemanticRefinement] = None,
        node_pooler: Optional[NodeFeaturePooler] = None,
        train_max_instances: int = 30,
        test_max_instances: int = 10,
        semantic_loss_weight: float = 0.25,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if self.mask_on and (semantic_head is None or node_pooler is None):
            raise ValueError(
                "TransfinerROIHeads with a mask head needs semantic_head and node_pooler"
            )
        self.semantic_head = semantic_head
        self.node_pooler = node_pooler
        self.train_max_instances = train_max_instances
        self.test_max_instances = test_max_instances
        self.semantic_loss_weight = semantic_loss_weight

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if not cfg.MODEL.MASK_ON:
            return ret
        name = cfg.MODEL.ROI_MASK_HEAD.NAME
        if name != "TransfinerMaskHead":
            raise ValueError(
                f"MODEL.ROI_HEADS.NAME TransfinerROIHeads needs MODEL.ROI_MASK_HEAD.NAME "
                f"'TransfinerMaskHead', got {name!r}"
            )
        if cfg.INPUT.MASK_FORMAT != "bitmask":
            # the incoherent and semantic GT are computed on full-image BitMasks (the reference's
            # gt_masks_bit); PolygonMasks would only fail at the first training step
            raise ValueError(
                f"MODEL.ROI_HEADS.NAME TransfinerROIHeads needs INPUT.MASK_FORMAT 'bitmask', "
                f"got {cfg.INPUT.MASK_FORMAT!r}"
            )
        T = cfg.MODEL.TRANSFINER
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        coarse = 2 * cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        ret.update(
            semantic_head=SemanticRefinement(
                input_shape[in_features[0]].channels, T.SEMANTIC_NUM_CONVS
            ),
            node_pooler=NodeFeaturePooler(
                output_sizes=[coarse * 2**level for level in range(T.QUADTREE_DEPTH)],
                level_offsets=list(T.NODE_LEVEL_OFFSETS),
                scales=[1.0 / input_shape[f].stride for f in in_features],
                sampling_ratio=cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
            ),
            train_max_instances=T.TRAIN_MAX_INSTANCES,
            test_max_instances=T.TEST_MAX_INSTANCES,
            semantic_loss_weight=T.SEMANTIC_LOSS_WEIGHT,
        )
        return ret

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        if not self.training:
            return super().forward(images, features, proposals, targets)
        assert targets, "'targets' argument is required during training"
        # proposals inherit gt_index: which GT instance of their image they are matched to
        targets = [_with_gt_index(t) for t in targets]
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = self._forward_box(features, proposals)
        losses.update(self._forward_mask(features, proposals, targets))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _forward_mask(
        self,
        features: Dict[str, torch.Tensor],
        instances: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        feats = [features[f] for f in self.mask_in_features]
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        roi = self.mask_pooler(feats, boxes)
        refined_p2, residual = self.semantic_head(feats[0])
        cap = self.train_max_instances if self.training else self.test_max_instances
        inds = first_per_image([b.tensor.shape[0] for b in boxes], cap, roi.device)
        node_features = partial(self.node_pooler, [refined_p2] + feats[1:], boxes)
        mask_features = TransfinerFeatures(roi=roi, refine_inds=inds, node_features=node_features)
        if not self.training:
            return self.mask_head(mask_features, instances)
        losses = self.mask_head(mask_features, instances, targets)
        logits = self.semantic_head.predictor(residual)
        stride = self.mask_pooler.level_poolers[0].spatial_scale
        gt = semantic_targets(targets, logits.shape[-2:], round(1 / stride))
        losses["loss_semantic"] = self.semantic_loss_weight * semantic_loss(logits, gt)
        return losses


def _with_gt_index(t: Instances) -> Instances:
    out = Instances(t.image_size, **t.get_fields())
    out.gt_index = torch.arange(len(t), device=t.gt_classes.device)
    return out
