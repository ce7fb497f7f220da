"""The Mask Transfiner RoI mask head: Mask R-CNN's coarse mask branch plus the incoherence and
boundary branches and the quadtree refinement transformer (paper Fig. 3)."""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detectron2.structures import Instances
from torch import nn

from instseg_d2.benchmark import stage
from instseg_d2.layers import split_per_image

from .losses import boundary_loss, incoherence_loss
from .refine import QuadtreeRefiner
from .targets import MaskTargets, boundary_map


@dataclass
class TransfinerFeatures:
    """What :class:`TransfinerROIHeads` pools for the mask head.

    Attributes:
        roi: (N, C, P, P) RoI features of every box (P = POOLER_RESOLUTION, 14).
        refine_inds: (R,) indices of the boxes to refine (into the N boxes).
        node_features: ``node_features(level, inds, cells)`` gives the (len(inds), M, C)
            features of quadtree level ``level`` at the (len(inds), M) cells of boxes ``inds``.
    """

    roi: torch.Tensor
    refine_inds: torch.Tensor
    node_features: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@ROI_MASK_HEAD_REGISTRY.register()
class TransfinerMaskHead(MaskRCNNConvUpsampleHead):
    """Mask R-CNN's conv head (``mask_fcn*``, ``deconv``, ``predictor``: the coarse 28 x 28
    mask, same names and init as detectron2's) plus

    * the incoherence branch: ``INCOHERENT_CONV_DIMS`` 3x3 convs on (detached RoI features +
      mask-branch features), a 2x deconv and a 1x1 conv: incoherence logits at 28 x 28;
    * the boundary branch (training only): 2x deconv + ReLU + 1x1 conv on the mask-branch
      features: boundary logits at 28 x 28;
    * ``refiner``: the quadtree transformer that refines the incoherent nodes up to
      ``28 * 2^(depth-1)`` (112) and the mask of every refined box.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: List[int],
        conv_norm="",
        incoherent_dims: List[int],
        refiner: QuadtreeRefiner,
        incoherent_gt_downsample: int = 2,
        incoherent_gt_eps: float = 0.01,
        incoherent_roi_thresh: float = 0.05,
        boundary_width: int = 1,
        dice_smooth: float = 1.0,
        loss_weights: Optional[Dict[str, float]] = None,
        **kwargs,
    ):
        """
        Args:
            input_shape, num_classes, conv_dims, conv_norm: as MaskRCNNConvUpsampleHead.
            incoherent_dims: output widths of the incoherence branch's 3x3 convs.
            refiner: the quadtree refinement (node selection + transformer).
            incoherent_gt_downsample, incoherent_gt_eps, incoherent_roi_thresh: incoherent GT.
            boundary_width: contour width of the boundary GT.
            dice_smooth: smoothing of the incoherence dice loss.
            loss_weights: "mask", "incoherent", "refine", "boundary" (default 1, 0.5, 1, 1).
        """
        super().__init__(input_shape, num_classes=num_classes, conv_dims=conv_dims,
                         conv_norm=conv_norm, **kwargs)  # fmt: skip
        feat_dim = conv_dims[-2] if len(conv_dims) > 1 else input_shape.channels
        # detached RoI features are added to the mask-branch features; the reference has
        # equal widths (256); a 1x1 projection bridges a narrower mask branch.
        self.incoherent_input_proj = (
            Conv2d(input_shape.channels, feat_dim, 1) if input_shape.channels != feat_dim else None
        )
        self.incoherent_fcns = []
        cur = feat_dim
        for k, dim in enumerate(incoherent_dims):
            conv = Conv2d(cur, dim, 3, padding=1, bias=not conv_norm,
                          norm=get_norm(conv_norm, dim), activation=nn.ReLU())  # fmt: skip
            self.add_module(f"incoherent_fcn{k + 1}", conv)
            self.incoherent_fcns.append(conv)
            cur = dim
        self.incoherent_deconv = ConvTranspose2d(cur, cur, kernel_size=2, stride=2)
        self.incoherent_predictor = Conv2d(cur, 1, 1)
        self.boundary_deconv = ConvTranspose2d(feat_dim, conv_dims[-1], kernel_size=2, stride=2)
        self.boundary_predictor = Conv2d(conv_dims[-1], 1, 1)
        self.refiner = refiner
        for layer in self.incoherent_fcns + [self.incoherent_deconv, self.boundary_deconv]:
            weight_init.c2_msra_fill(layer)
        if self.incoherent_input_proj is not None:
            weight_init.c2_msra_fill(self.incoherent_input_proj)
        for pred in (self.incoherent_predictor, self.boundary_predictor):
            nn.init.normal_(pred.weight, std=0.001)
            nn.init.constant_(pred.bias, 0)

        self.incoherent_gt_downsample = incoherent_gt_downsample
        self.incoherent_gt_eps = incoherent_gt_eps
        self.incoherent_roi_thresh = incoherent_roi_thresh
        self.boundary_width = boundary_width
        self.dice_smooth = dice_smooth
        w = {"mask": 1.0, "incoherent": 0.5, "refine": 1.0, "boundary": 1.0}
        w.update(loss_weights or {})
        self.loss_weights = w

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        T = cfg.MODEL.TRANSFINER
        ret.update(
            incoherent_dims=list(T.INCOHERENT_CONV_DIMS),
            refiner=QuadtreeRefiner(cfg, input_shape),
            incoherent_gt_downsample=T.INCOHERENT_GT_DOWNSAMPLE,
            incoherent_gt_eps=T.INCOHERENT_GT_EPS,
            incoherent_roi_thresh=T.INCOHERENT_ROI_THRESH,
            boundary_width=T.BOUNDARY_WIDTH,
            dice_smooth=T.INCOHERENT_DICE_SMOOTH,
            loss_weights={
                "mask": T.MASK_LOSS_WEIGHT,
                "incoherent": T.INCOHERENT_LOSS_WEIGHT,
                "refine": T.REFINE_LOSS_WEIGHT,
                "boundary": T.BOUNDARY_LOSS_WEIGHT,
            },
        )
        return ret

    def layers(self, x: torch.Tensor):
        """
        Args:
            x: (N, C, P, P) RoI features.

        Returns:
            coarse mask logits (N, K, 2P, 2P), incoherence logits (N, 2P, 2P), and boundary
            logits (N, 2P, 2P) in training (None in inference).
        """
        feats = x
        for layer in self.conv_norm_relus:
            feats = layer(feats)
        coarse = self.predictor(self.deconv_relu(self.deconv(feats)))

        skip = x.detach()
        if self.incoherent_input_proj is not None:
            skip = self.incoherent_input_proj(skip)
        inc = skip + feats
        for layer in self.incoherent_fcns:
            inc = layer(inc)
        incoherence = self.incoherent_predictor(self.incoherent_deconv(inc))[:, 0]

        boundary = None
        if self.training:
            boundary = self.boundary_predictor(F.relu(self.boundary_deconv(feats)))[:, 0]
        return coarse, incoherence, boundary

    def forward(
        self,
        features: TransfinerFeatures,
        instances: List[Instances],
        targets: Optional[List[Instances]] = None,
    ):
        """
        Args:
            features: pooled by :class:`TransfinerROIHeads`.
            instances: fg proposals with ``gt_classes`` / ``gt_index`` (training) or
                detections with ``pred_classes`` (inference), per image.
            targets: the GT instances of each image (training), with ``gt_masks``.

        Returns:
            a dict of losses in training; in inference the instances, with ``pred_masks``
            (n, 1, S, S) foreground probabilities, S = 28 * 2^(depth-1).
        """
        coarse, incoherence, boundary = self.layers(features.roi)
        if self.training:
            return self.losses(coarse, incoherence, boundary, features, instances, targets)
        mask_rcnn_inference(coarse, instances)  # pred_masks: class probabilities (n, 1, 28, 28)
        probs = cat([x.pred_masks for x in instances])[:, 0]
        out_size = self.refiner.level_sizes(probs.shape[-1])[-1]
        masks = F.interpolate(probs[:, None], (out_size, out_size), mode="bilinear")
        inds = features.refine_inds
        with stage("refine"):
            refined = self.refiner.inference(
                probs[inds], incoherence[inds].sigmoid(), features.roi, inds,
                features.node_features,
            )  # fmt: skip
        masks[inds] = refined[:, None].to(masks.dtype)
        for x, m in zip(instances, split_per_image(masks, instances)):
            x.pred_masks = m
        return instances

    def losses(self, coarse, incoherence, boundary, features, instances, targets):
        w = self.loss_weights
        losses = {"loss_mask": mask_rcnn_loss(coarse, instances, self.vis_period) * w["mask"]}
        n, size = coarse.shape[0], coarse.shape[-1]
        if n == 0:
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            losses.update(loss_incoherent=zero, loss_boundary=zero, loss_refine=zero)
            return losses
        if targets is None or not all(x.has("gt_index") for x in instances):
            raise ValueError("TransfinerMaskHead needs the GT targets and proposals' gt_index")
        tg = MaskTargets(instances, targets, self.incoherent_gt_downsample, self.incoherent_gt_eps)
        gt_inc = tg.crop_incoherent(size, self.incoherent_roi_thresh)
        losses["loss_incoherent"] = w["incoherent"] * incoherence_loss(
            incoherence, gt_inc, self.dice_smooth
        )
        gt_boundary = boundary_map(tg.crop_masks(size), self.boundary_width)
        losses["loss_boundary"] = w["boundary"] * boundary_loss(boundary, gt_boundary)

        if coarse.shape[1] == 1:
            logits = coarse[:, 0]
        else:
            logits = coarse[
                torch.arange(n, device=coarse.device), cat([x.gt_classes for x in instances])
            ]
        inds = features.refine_inds
        losses["loss_refine"] = w["refine"] * self.refiner.training_loss(
            logits[inds].detach().sigmoid(),
            incoherence[inds].detach().sigmoid(),
            features.roi,
            inds,
            features.node_features,
            lambda size, sel: tg.crop_masks(size, inds[sel]),
        )
        return losses
