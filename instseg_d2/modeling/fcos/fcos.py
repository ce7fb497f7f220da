"""FCOS (Tian et al., ICCV 2019) as a detectron2 proposal generator, shared by the mask methods."""

import logging
from typing import Callable, Dict, List, Optional, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.proposal_generator.build import PROPOSAL_GENERATOR_REGISTRY
from detectron2.structures import ImageList, Instances
from torch import nn

from ...layers import compute_locations
from .head import FCOSHead
from .inference import predict_instances
from .losses import box_losses, classification_loss, ctrness_targets, reduce_mean
from .targets import fcos_targets

logger = logging.getLogger(__name__)

# Training iterations in a row in which every positive location predicts a box without area
# before FCOS warns that its box regression has collapsed (projects/FCOS/NOTES.md).
COLLAPSE_WARN_ITERS = 20


@PROPOSAL_GENERATOR_REGISTRY.register()
class FCOS(nn.Module):
    """Fully convolutional one-stage detection on P3-P7.

    ``forward(images, features, gt_instances, top_module)`` returns

    * in training ``(extras, losses)``: ``losses`` = ``loss_fcos_cls``, ``loss_fcos_loc``,
      ``loss_fcos_ctr`` (or ``loss_fcos_iou``); ``extras["instances"]`` = the positive
      locations (:class:`Instances` with ``gt_inds`` into the batch's concatenated GT,
      ``im_inds``, ``fpn_levels``, ``locations``, ``labels``, ``reg_targets``, ``gt_ctrs``,
      ``logits_pred``, ``ctrness_pred``, ``pos_inds`` and ``top_feats`` with a top module) and
      ``extras["loss_denorm"]`` (sum of centre-ness targets averaged over workers);
    * in inference ``(detections, {})``, one :class:`Instances` per image (``pred_boxes``,
      ``scores``, ``pred_classes``, ``locations``, ``fpn_levels``, ``top_feat``).

    ``top_module`` (e.g. CondInst's controller) is applied to the box tower of every level.
    """

    @configurable
    def __init__(
        self,
        *,
        head: FCOSHead,
        in_features: Sequence[str],
        strides: Sequence[int],
        num_classes: int,
        sizes_of_interest: Sequence[float] = (64, 128, 256, 512),
        center_sample: bool = True,
        pos_radius: float = 1.5,
        center_sample_mode: str = "mask",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loss_normalizer_cls: str = "fg",
        loss_weight_cls: float = 1.0,
        box_quality: str = "ctrness",
        loc_loss_type: str = "giou",
        score_thresh_test: float = 0.05,
        pre_nms_topk_test: int = 1000,
        nms_thresh: float = 0.6,
        post_nms_topk_test: int = 100,
        thresh_with_ctr: bool = False,
    ):
        super().__init__()
        if loss_normalizer_cls not in ("fg", "moving_fg", "all"):
            raise ValueError(
                "MODEL.FCOS.LOSS_NORMALIZER_CLS must be fg, moving_fg or all, got "
                f"{loss_normalizer_cls!r}"
            )
        if box_quality not in ("ctrness", "iou"):
            raise ValueError(f"MODEL.FCOS.BOX_QUALITY must be ctrness or iou, got {box_quality!r}")
        if center_sample_mode not in ("mask", "box"):
            raise ValueError(
                f"MODEL.FCOS.CENTER_SAMPLE_MODE must be mask or box, got {center_sample_mode!r}"
            )
        if loc_loss_type not in ("giou", "iou", "linear_iou"):
            raise ValueError(
                f"MODEL.FCOS.LOC_LOSS_TYPE must be giou, iou or linear_iou, got {loc_loss_type!r}"
            )
        if len(strides) != len(in_features):
            raise ValueError(
                f"MODEL.FCOS.FPN_STRIDES {list(strides)} and IN_FEATURES {list(in_features)} "
                "differ in length"
            )
        if len(sizes_of_interest) != len(in_features) - 1:
            raise ValueError(
                f"MODEL.FCOS.SIZES_OF_INTEREST {list(sizes_of_interest)} needs one value fewer "
                f"than the {len(in_features)} IN_FEATURES (the bounds between their size ranges)"
            )
        self.fcos_head = head
        self.in_features = list(in_features)
        self.strides = list(strides)
        self.num_classes = num_classes
        self.sizes_of_interest = list(sizes_of_interest)
        self.center_sample = center_sample
        self.pos_radius = pos_radius
        self.center_sample_mode = center_sample_mode
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.loss_normalizer_cls = loss_normalizer_cls
        self.loss_weight_cls = loss_weight_cls
        self.box_quality = box_quality
        self.loc_loss_type = loc_loss_type
        self.score_thresh_test = score_thresh_test
        self.pre_nms_topk_test = pre_nms_topk_test
        self.nms_thresh = nms_thresh
        self.post_nms_topk_test = post_nms_topk_test
        self.thresh_with_ctr = thresh_with_ctr
        self.moving_num_fg = 100.0  # "moving_fg" normaliser, momentum 0.9
        self._empty_box_iters, self._collapse_warned = 0, False  # see _watch_collapse

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        f = cfg.MODEL.FCOS
        missing = [k for k in f.IN_FEATURES if k not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES {list(f.IN_FEATURES)}: the backbone has no {missing} "
                f"(it gives {sorted(input_shape)}); use build_fcos_resnet_fpn_backbone"
            )
        return {
            "head": FCOSHead(cfg, [input_shape[k] for k in f.IN_FEATURES]),
            "in_features": f.IN_FEATURES,
            "strides": f.FPN_STRIDES,
            "num_classes": f.NUM_CLASSES,
            "sizes_of_interest": f.SIZES_OF_INTEREST,
            "center_sample": f.CENTER_SAMPLE,
            "pos_radius": f.POS_RADIUS,
            "center_sample_mode": f.CENTER_SAMPLE_MODE,
            "focal_alpha": f.LOSS_ALPHA,
            "focal_gamma": f.LOSS_GAMMA,
            "loss_normalizer_cls": f.LOSS_NORMALIZER_CLS,
            "loss_weight_cls": f.LOSS_WEIGHT_CLS,
            "box_quality": f.BOX_QUALITY,
            "loc_loss_type": f.LOC_LOSS_TYPE,
            "score_thresh_test": f.INFERENCE_TH_TEST,
            "pre_nms_topk_test": f.PRE_NMS_TOPK_TEST,
            "nms_thresh": f.NMS_TH,
            "post_nms_topk_test": cfg.TEST.DETECTIONS_PER_IMAGE,
            "thresh_with_ctr": f.THRESH_WITH_CTR,
        }

    @property
    def in_channels_to_top_module(self) -> int:
        return self.fcos_head.in_channels_to_top_module

    def locations(self, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Per level (H_l*W_l, 2) image coordinates of the feature-map cells."""
        return [
            compute_locations(x.shape[-2], x.shape[-1], s, device=x.device)
            for x, s in zip(features, self.strides)
        ]

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
        top_module: Optional[Callable] = None,
    ):
        feats = [features[f] for f in self.in_features]
        locations = self.locations(feats)
        logits, reg, ctrness, top_feats = self.fcos_head(feats, top_module)
        if self.training:
            if gt_instances is None:
                raise ValueError("FCOS in training mode needs gt_instances")
            return self.losses(locations, logits, reg, ctrness, top_feats, gt_instances)
        detections = predict_instances(
            locations, logits, reg, ctrness, top_feats, self.strides, images.image_sizes,
            score_thresh=self.score_thresh_test, pre_nms_topk=self.pre_nms_topk_test,
            nms_thresh=self.nms_thresh, post_nms_topk=self.post_nms_topk_test,
            thresh_with_ctr=self.thresh_with_ctr,
        )  # fmt: skip
        return detections, {}

    def losses(self, locations, logits, reg, ctrness, top_feats, gt_instances):
        """Targets and losses; see the class docstring for what is returned."""
        targets = fcos_targets(
            locations, gt_instances, self.strides, self.sizes_of_interest, self.num_classes,
            self.pos_radius, self.center_sample, self.center_sample_mode,
        )  # fmt: skip
        c = self.num_classes
        flat = Instances((0, 0), **targets)
        flat.logits_pred = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, c) for x in logits])
        flat.reg_pred = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, 4) for x in reg])
        flat.ctrness_pred = torch.cat([x.permute(0, 2, 3, 1).reshape(-1) for x in ctrness])
        if top_feats:
            d = top_feats[0].shape[1]
            flat.top_feats = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, d) for x in top_feats])

        pos_inds = (flat.labels != c).nonzero().squeeze(1)
        num_pos_avg = max(reduce_mean(pos_inds.new_tensor(float(len(pos_inds)))).item(), 1.0)
        cls_loss = classification_loss(
            flat.logits_pred, flat.labels, self.focal_alpha, self.focal_gamma
        )
        if self.loss_normalizer_cls == "fg":
            cls_norm = num_pos_avg
        elif self.loss_normalizer_cls == "moving_fg":
            self.moving_num_fg = 0.9 * self.moving_num_fg + 0.1 * num_pos_avg
            cls_norm = self.moving_num_fg
        else:  # "all"
            cls_norm = max(reduce_mean(flat.labels.new_tensor(float(len(flat)))).item(), 1.0)
        losses = {"loss_fcos_cls": cls_loss / cls_norm * self.loss_weight_cls}

        pos = flat[pos_inds]
        pos.pos_inds = pos_inds
        self._watch_collapse(pos.reg_pred)
        pos.gt_ctrs = ctrness_targets(pos.reg_targets)
        loss_denorm = max(reduce_mean(pos.gt_ctrs.sum()).item(), 1e-6)
        losses.update(
            box_losses(
                pos.reg_pred, pos.reg_targets, pos.ctrness_pred, pos.gt_ctrs, num_pos_avg,
                loss_denorm, self.box_quality, self.loc_loss_type,
            )
        )  # fmt: skip
        return {"instances": pos, "loss_denorm": loss_denorm}, losses

    def _watch_collapse(self, reg_pred: torch.Tensor) -> None:
        """Warn once when, for COLLAPSE_WARN_ITERS iterations in a row, every positive location
        predicted a box without area: through the ReLU and the GIoU loss its regression then
        gets no gradient at all and does not recover. ``reg_pred``: (P, 4) ltrb."""
        if len(reg_pred) == 0:
            return
        r = reg_pred.detach()
        empty = bool((((r[:, 0] + r[:, 2]) * (r[:, 1] + r[:, 3])) == 0).all())
        self._empty_box_iters = self._empty_box_iters + 1 if empty else 0
        if self._empty_box_iters >= COLLAPSE_WARN_ITERS and not self._collapse_warned:
            self._collapse_warned = True
            logger.warning(
                "FCOS: for %d iterations every positive location has predicted a box of zero "
                "width or height. The box regression gets no gradient (ReLU + GIoU) and has "
                "collapsed: loss_fcos_loc stays where it is and post-processing will drop every "
                "detection. On small objects MODEL.FCOS.BBOX_PRED_BIAS_INIT 1.0 avoids it "
                "(projects/FCOS/NOTES.md).",
                COLLAPSE_WARN_ITERS,
            )
