"""CondInst (Tian, Shen, Chen, ECCV 2020): FCOS + dynamic, instance-conditioned mask heads."""

import logging
from typing import List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling.meta_arch.build import META_ARCH_REGISTRY
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import BitMasks, ImageList, Instances

from instseg_d2.layers import aligned_bilinear, dice_loss, instance_bitmasks, split_per_image
from instseg_d2.modeling import OneStageDetector
from instseg_d2.modeling.refine import top_conv
from instseg_d2.utils.profiling import stage

from .dynamic_head import DynamicMaskHead
from .mask_branch import MaskBranch

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class CondInst(OneStageDetector):
    """FCOS whose box tower also predicts, per location, the filters ``theta_{x,y}`` (the
    ``controller``) of a small mask FCN applied to the shared mask features F_mask.

    Training: the dice loss of the masks of FCOS's positive locations (at most
    ``max_proposals``) against their GT masks sampled at ``mask_out_stride``. Inference: the
    masks of FCOS's detections, thresholded at 0.5 after upsampling to the image.
    """

    @configurable
    def __init__(
        self,
        *,
        mask_branch: MaskBranch,
        mask_head: DynamicMaskHead,
        max_proposals: int = -1,
        topk_proposals_per_im: int = -1,
        mask_threshold: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if max_proposals != -1 and topk_proposals_per_im != -1:
            raise ValueError(
                "MODEL.CONDINST.MAX_PROPOSALS and TOPK_PROPOSALS_PER_IM cannot both be set "
                f"(got {max_proposals} and {topk_proposals_per_im})"
            )
        self.mask_branch = mask_branch
        self.mask_head = mask_head
        self.controller = top_conv(
            self.proposal_generator.in_channels_to_top_module, mask_head.num_gen_params
        )
        self.max_proposals = max_proposals
        self.topk_proposals_per_im = topk_proposals_per_im
        self.mask_threshold = mask_threshold

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            mask_branch=MaskBranch(cfg, ret["backbone"].output_shape()),
            mask_head=DynamicMaskHead(cfg),
            max_proposals=cfg.MODEL.CONDINST.MAX_PROPOSALS,
            topk_proposals_per_im=cfg.MODEL.CONDINST.TOPK_PROPOSALS_PER_IM,
        )
        return ret

    @property
    def mask_out_stride(self) -> int:
        return self.mask_head.mask_out_stride

    def top_module(self):
        return self.controller

    def prepare_targets(self, images: ImageList, gt_instances: List[Instances]) -> None:
        """Add ``gt_bitmasks_full`` (G, Hp, Wp) (padded image size) and ``gt_bitmasks``,
        sampled at ``[s//2::s]`` (s = mask out stride, no resizing) to every image's GT."""
        hp, wp = images.tensor.shape[-2:]
        s = self.mask_out_stride
        for inst in gt_instances:
            if not inst.has("gt_masks"):
                raise ValueError("CondInst needs instance masks (gt_masks) for training")
            # rasterised once (FCOS's centres of mass use them too)
            inst.gt_masks = BitMasks(instance_bitmasks(inst))
            inst.gt_bitmasks_full = instance_bitmasks(inst, pad_to=(hp, wp)).float()
            inst.gt_bitmasks = instance_bitmasks(inst, pad_to=(hp, wp), stride=s).float()

    def select_proposals(self, pos: Instances) -> Instances:
        """MAX_PROPOSALS random positives, or TOPK_PROPOSALS_PER_IM by score per image/GT."""
        if 0 <= self.max_proposals < len(pos):
            keep = torch.randperm(len(pos), device=pos.gt_inds.device)[: self.max_proposals]
            return pos[keep]
        if self.topk_proposals_per_im < 0 or len(pos) == 0:
            return pos
        score = pos.logits_pred.sigmoid().max(dim=1).values * pos.ctrness_pred.sigmoid()
        keep = []
        for im in pos.im_inds.unique():
            in_im = (pos.im_inds == im).nonzero().squeeze(1)
            gts = pos.gt_inds[in_im].unique()
            k = max(self.topk_proposals_per_im // len(gts), 1)
            for g in gts:
                idx = in_im[pos.gt_inds[in_im] == g]
                keep.append(idx[score[idx].topk(min(k, len(idx))).indices])
        return pos[torch.cat(keep)]

    def mask_losses(self, images, features, extras, gt_instances):
        losses = {}
        mask_feats = self.mask_branch(features)
        if self.mask_branch.sem_loss_on:
            losses.update(self.mask_branch.semantic_loss(features, gt_instances))
        pos = self.select_proposals(extras["instances"])
        if len(pos) == 0:
            losses["loss_mask"] = mask_feats.sum() * 0 + self.controller.weight.sum() * 0
            return losses
        logits = self.mask_head(
            mask_feats, self.mask_branch.out_stride, pos.im_inds, pos.top_feats,
            pos.locations, pos.fpn_levels,
        )  # fmt: skip
        gt = torch.cat([x.gt_bitmasks for x in gt_instances])[pos.gt_inds]
        losses["loss_mask"] = dice_loss(logits.sigmoid()[:, 0], gt, eps=1e-5, reduction="mean")
        return losses

    def predict_masks(self, images, features, detections):
        """``pred_global_masks`` (R, 1, Hp/s, Wp/s): mask probabilities of every detection at
        the mask out stride s over the padded image."""
        mask_feats = self.mask_branch(features)
        with stage("mask_head"):
            # the fields are concatenated one by one: Instances.cat refuses images of
            # different sizes, which a batch may hold
            top_feat, locations, levels = (
                torch.cat([d.get(k) for d in detections])
                for k in ("top_feat", "locations", "fpn_levels")
            )
            im_inds = torch.cat(
                [torch.full_like(d.pred_classes, i) for i, d in enumerate(detections)]
            )
            probs = self.mask_head(
                mask_feats, self.mask_branch.out_stride, im_inds, top_feat, locations, levels
            ).sigmoid()
            for d, p in zip(detections, split_per_image(probs, detections)):
                d.pred_global_masks = p
        return detections

    def postprocess(self, det: Instances, batched_input: dict, images: ImageList) -> Instances:
        """Boxes scaled to the original image; masks upsampled (aligned bilinear) to the padded
        input, cropped to the image, resized (bilinear) to the original size, > 0.5."""
        rh, rw = det.image_size
        h = batched_input.get("height", rh)
        w = batched_input.get("width", rw)
        keep = ("pred_boxes", "scores", "pred_classes", "pred_global_masks")
        det = Instances(det.image_size, **{k: v for k, v in det.get_fields().items() if k in keep})
        det = detector_postprocess(det, h, w)
        m = det.pred_global_masks
        det.remove("pred_global_masks")
        m = aligned_bilinear(m, self.mask_out_stride)[:, :, :rh, :rw]
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        det.pred_masks = m[:, 0] > self.mask_threshold
        return det
