"""MaskLab's mask head: semantic crop + direction pooling, 1x1 fusion, hypercolumn refinement."""

from typing import Dict, List, Optional, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, cat
from detectron2.modeling.roi_heads import ROI_MASK_HEAD_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import nn

from instseg_d2.layers import split_per_image

from .crops import crop_and_resize, crop_class_channel
from .dense_head import MaskLabDenseHead
from .directions import direction_pooling
from .losses import dense_ce_loss, mask_bce_loss
from .targets import dense_targets, mask_crop_targets

_LOSS_NAMES = ("loss_mask_coarse", "loss_mask_refined", "loss_semantic", "loss_direction")


@ROI_MASK_HEAD_REGISTRY.register()
class MaskLabMaskHead(nn.Module):
    """Per-box foreground/background segmentation from MaskLab's dense logits (paper, Fig. 2-4).

    For each box: the semantic logit channel of the box's class cropped to the box, and the 32
    direction channels cropped to the box and assembled by direction pooling, both at S x S; a
    class-agnostic 1x1 conv on their concatenation gives the coarse mask logits; three 5x5 convs
    on [coarse logits, crops of conv1 and res2 features] (hypercolumn) give the refined logits.

    Training (sec. 4.1): called with ground-truth instances; the mask losses and the dense
    semantic / direction losses are computed on ground-truth boxes only.
    Inference: called with detections; sets ``pred_masks`` (R, 1, S, S) probabilities, pasted
    into the image by detectron2's post-processing as Mask R-CNN's.
    """

    @configurable
    def __init__(
        self,
        *,
        dense_head: MaskLabDenseHead,
        dense_in_features: List[str],
        hypercolumn_features: List[str],
        hypercolumn_shapes: List[ShapeSpec],
        num_classes: int,
        num_directions: int = 8,
        num_distance_bins: int = 4,
        max_distance: float = 1.0,
        crop_size: int = 41,
        sampling_ratio: int = 0,
        fusion_init: Tuple[float, float] = (0.5, 1.0),
        refine_num_convs: int = 3,
        refine_conv_dim: int = 64,
        refine_kernel_size: int = 5,
        loss_weights: Optional[Dict[str, float]] = None,
    ):
        """
        Args:
            dense_head: predicts the semantic and direction logits.
            dense_in_features: names of the features ``dense_head`` reads (finest first).
            hypercolumn_features, hypercolumn_shapes: features (and their shapes) cropped for the
                refinement; empty: no refinement, the coarse mask is the output.
            num_classes: K foreground classes.
            num_directions, num_distance_bins, max_distance: see :mod:`.directions`.
            crop_size: S, side of every per-box crop and of the output masks.
            sampling_ratio: ROIAlign sampling ratio of the crops.
            fusion_init: initial (semantic, direction) weights of the 1x1 fusion conv.
            refine_num_convs, refine_conv_dim, refine_kernel_size: the refinement ConvNet.
            loss_weights: weights of ``loss_mask_coarse``, ``loss_mask_refined``,
                ``loss_semantic``, ``loss_direction`` (a missing key weighs 1).
        """
        super().__init__()
        self.dense_head = dense_head
        self.dense_in_features = list(dense_in_features)
        self.hypercolumn_features = list(hypercolumn_features)
        self.hypercolumn_strides = [s.stride for s in hypercolumn_shapes]
        self.num_classes = num_classes
        self.num_directions = num_directions
        self.num_distance_bins = num_distance_bins
        self.max_distance = max_distance
        self.crop_size = crop_size
        self.sampling_ratio = sampling_ratio
        self.loss_weights = dict(loss_weights or {})
        unknown = set(self.loss_weights) - set(_LOSS_NAMES)
        if unknown:
            raise ValueError(f"Unknown MaskLab losses {sorted(unknown)}; known: {_LOSS_NAMES}")

        self.fusion = nn.Conv2d(2, 1, 1)
        with torch.no_grad():
            self.fusion.weight.copy_(
                torch.tensor(fusion_init, dtype=torch.float32).view(1, 2, 1, 1)
            )
            self.fusion.bias.zero_()

        self.refine = nn.ModuleList()
        self.predictor = None
        if self.hypercolumn_features:
            dim = 1 + sum(s.channels for s in hypercolumn_shapes)
            for _ in range(refine_num_convs):
                conv = Conv2d(
                    dim, refine_conv_dim, refine_kernel_size, padding=refine_kernel_size // 2
                )
                weight_init.c2_msra_fill(conv)
                self.refine.append(conv)
                dim = refine_conv_dim
            self.predictor = nn.Conv2d(dim, 1, 1)
            nn.init.normal_(self.predictor.weight, std=0.001)
            nn.init.constant_(self.predictor.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        c = cfg.MODEL.MASKLAB
        hyper = list(c.HYPERCOLUMN_FEATURES)
        missing = [f for f in hyper if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.MASKLAB.HYPERCOLUMN_FEATURES {missing} not among the backbone's outputs "
                f"{sorted(input_shape)}; use MODEL.BACKBONE.NAME "
                "'build_masklab_resnet_fpn_backbone', which also returns them"
            )
        if len(c.FUSION_INIT) != 2:
            raise ValueError(f"MODEL.MASKLAB.FUSION_INIT needs 2 values, got {c.FUSION_INIT}")
        return {
            "dense_head": MaskLabDenseHead(cfg, input_shape),
            "dense_in_features": c.DENSE_IN_FEATURES,
            "hypercolumn_features": hyper,
            "hypercolumn_shapes": [input_shape[f] for f in hyper],
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "num_directions": c.NUM_DIRECTIONS,
            "num_distance_bins": c.NUM_DISTANCE_BINS,
            "max_distance": c.MAX_DISTANCE,
            "crop_size": c.CROP_SIZE,
            "sampling_ratio": c.POOLER_SAMPLING_RATIO,
            "fusion_init": tuple(c.FUSION_INIT),
            "refine_num_convs": c.REFINE_NUM_CONVS,
            "refine_conv_dim": c.REFINE_CONV_DIM,
            "refine_kernel_size": c.REFINE_KERNEL_SIZE,
            "loss_weights": {
                "loss_mask_coarse": c.COARSE_MASK_LOSS_WEIGHT,
                "loss_mask_refined": c.REFINED_MASK_LOSS_WEIGHT,
                "loss_semantic": c.SEMANTIC_LOSS_WEIGHT,
                "loss_direction": c.DIRECTION_LOSS_WEIGHT,
            },
        }

    def mask_logits(
        self,
        features: Dict[str, torch.Tensor],
        semantic: torch.Tensor,
        direction: torch.Tensor,
        boxes: List[Boxes],
        classes: torch.Tensor,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Coarse and refined mask logits of the boxes.

        Args:
            features: backbone features (for the hypercolumn crops).
            semantic: (N, K + 1, H, W) and direction: (N, D * B, H, W) dense logits.
            boxes: N Boxes (R in all), image coordinates; classes: (R,) their classes.

        Returns:
            coarse (R, 1, S, S) and refined (R, 1, S, S) logits (None without refinement).
        """
        s, sr, stride = self.crop_size, self.sampling_ratio, self.dense_head.stride
        sem_crop = crop_class_channel(semantic, boxes, classes, stride, s, sr)
        dir_crop = crop_and_resize(direction, boxes, stride, s, sr)
        dir_pool = direction_pooling(
            dir_crop,
            cat([b.tensor for b in boxes]),
            self.num_directions,
            self.num_distance_bins,
            self.max_distance,
        )
        coarse = self.fusion(torch.cat([sem_crop, dir_pool], dim=1))
        if self.predictor is None:
            return coarse, None
        hyper = [
            crop_and_resize(features[f], boxes, st, s, sr)
            for f, st in zip(self.hypercolumn_features, self.hypercolumn_strides)
        ]
        x = torch.cat([coarse] + hyper, dim=1)
        for conv in self.refine:
            x = F.relu(conv(x))
        return coarse, self.predictor(x)

    def forward(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """
        Args:
            features: backbone features by name.
            instances: training: ground-truth instances per image (``gt_boxes``, ``gt_classes``,
                ``gt_masks``); inference: detections (``pred_boxes``, ``pred_classes``).

        Returns:
            training: dict of weighted losses; inference: ``instances`` with ``pred_masks``.
        """
        semantic, direction = self.dense_head([features[f] for f in self.dense_in_features])
        if self.training:
            boxes = [x.gt_boxes for x in instances]
            classes = cat([x.gt_classes for x in instances])
        else:
            boxes = [x.pred_boxes for x in instances]
            classes = cat([x.pred_classes for x in instances])
        coarse, refined = self.mask_logits(features, semantic, direction, boxes, classes)
        if self.training:
            return self.losses(instances, semantic, direction, coarse, refined)
        probs = (coarse if refined is None else refined).sigmoid()
        for inst, p in zip(instances, split_per_image(probs, instances)):
            inst.pred_masks = p
        return instances

    def losses(
        self,
        instances: List[Instances],
        semantic: torch.Tensor,
        direction: torch.Tensor,
        coarse: torch.Tensor,
        refined: Optional[torch.Tensor],
    ) -> Dict[str, torch.Tensor]:
        """Mask BCE on the coarse and refined logits; dense CE on semantic and direction logits.

        A loss whose weight is 0 is neither computed nor returned.
        """
        w = {k: self.loss_weights.get(k, 1.0) for k in _LOSS_NAMES}
        mask_t = mask_crop_targets(instances, self.crop_size)
        losses = {"loss_mask_coarse": mask_bce_loss(coarse, mask_t)}
        if refined is not None:
            losses["loss_mask_refined"] = mask_bce_loss(refined, mask_t)
        if w["loss_semantic"] or w["loss_direction"]:
            sem_t, dir_t = dense_targets(
                instances,
                semantic.shape[-2:],
                self.dense_head.stride,
                self.num_classes,
                self.num_directions,
                self.num_distance_bins,
                self.max_distance,
            )
            losses["loss_semantic"] = dense_ce_loss(semantic, sem_t)
            losses["loss_direction"] = dense_ce_loss(direction, dir_t)
        return {k: v * w[k] for k, v in losses.items() if w[k] != 0}
