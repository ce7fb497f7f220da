"""DVIS meta-architecture: label FCN, variational loss, discretization, verification."""

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from instseg_d2.layers import aligned_bilinear, boxes_from_masks, instance_bitmasks, split_per_image
from instseg_d2.utils.profiling import stage

from . import losses as L
from .discretization import Candidates, Discretizer
from .label_head import LabelHead
from .targets import LabelTargets, label_targets, valid_mask, verification_targets
from .verification import VerificationHead, verification_losses, verification_scores


@META_ARCH_REGISTRY.register()
class DVIS(nn.Module):
    """Deep Variational Instance Segmentation (Yuan, Chen, Li, NeurIPS 2020).

    An FCN predicts one instance-label channel ``f = ReLU(z)`` at stride 4, trained with the
    variational loss (binary, permutation-invariant, Mumford-Shah, quantization). At inference
    the label map is discretized by mean-shift (two bandwidths) into candidate segments, which
    a small CNN verifies (class + IoU); the segments are the masks.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        in_feature: str,
        label_head: nn.Module,
        discretizer: Discretizer,
        verifier: VerificationHead,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        num_classes: int,
        loss_weights: Dict[str, float],
        binary_margin: float = 2.0,
        size_weight_max: float = 10.0,
        pi_margin: float = 1.0,
        pi_diff_weight: float = 3.0,
        pi_sampling: str = "stratified",
        pi_window: int = 129,
        pi_center: int = 8,
        pi_dilation: int = 8,
        pi_random_pixels: int = 1024,
        pi_include_background: bool = False,
        pi_pairs: str = "foreground",
        ms_normalization: str = "all_pixels",
        huber_theta: float = 0.1,
        iou_high: float = 0.2,
        iou_low: float = 0.1,
        add_gt_candidates: bool = True,
        gt_candidates_start_iter: int = 0,
        detach_verifier_features: bool = False,
        score_cls_weight: float = 0.5,
        score_thresh: float = 0.05,
        max_detections: int = 100,
    ):
        super().__init__()
        if pi_sampling not in ("stratified", "random"):
            raise ValueError(
                f"MODEL.DVIS.LOSS.PI_SAMPLING must be 'stratified' or 'random', got {pi_sampling!r}"
            )
        if pi_pairs not in ("foreground", "reference"):
            raise ValueError(
                f"MODEL.DVIS.LOSS.PI_PAIRS must be 'foreground' or 'reference', got {pi_pairs!r}"
            )
        if pi_pairs == "reference" and pi_sampling != "stratified":
            raise ValueError(
                "MODEL.DVIS.LOSS.PI_PAIRS 'reference' (the research code's dilated-kernel pairs) "
                f"needs MODEL.DVIS.LOSS.PI_SAMPLING 'stratified', got {pi_sampling!r}"
            )
        if ms_normalization not in ("all_pixels", "nonzero"):
            raise ValueError(
                "MODEL.DVIS.LOSS.MS_NORMALIZATION must be 'all_pixels' or 'nonzero', got "
                f"{ms_normalization!r}"
            )
        self.backbone = backbone
        self.in_feature = in_feature
        self.stride = backbone.output_shape()[in_feature].stride // 2
        self.label_head = label_head
        self.discretizer = discretizer
        self.verifier = verifier
        self.num_classes = num_classes
        self.loss_weights = dict(loss_weights)
        self.binary_margin = binary_margin
        self.size_weight_max = size_weight_max
        self.pi = dict(
            sampling=pi_sampling,
            num_pixels=pi_random_pixels,
            include_background=pi_include_background,
            margin=pi_margin,
            theta=huber_theta,
            diff_weight=pi_diff_weight,
            pairs=pi_pairs,
        )
        offsets = L.reference_offsets if pi_pairs == "reference" else L.stratified_offsets
        self.register_buffer("pi_offsets", offsets(pi_window, pi_center, pi_dilation), False)
        self.ms_normalization = ms_normalization
        self.huber_theta = huber_theta
        self.iou_high, self.iou_low = iou_high, iou_low
        self.add_gt_candidates = add_gt_candidates
        self.gt_candidates_start_iter = gt_candidates_start_iter
        self.detach_verifier_features = detach_verifier_features
        self.score_cls_weight = score_cls_weight
        self.score_thresh = score_thresh
        self.max_detections = max_detections
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        d = cfg.MODEL.DVIS
        if d.IN_FEATURE not in backbone.output_shape():
            raise ValueError(
                f"MODEL.DVIS.IN_FEATURE {d.IN_FEATURE!r} is not a backbone output; "
                f"available: {sorted(backbone.output_shape())}"
            )
        shape = backbone.output_shape()[d.IN_FEATURE]
        return {
            "backbone": backbone,
            "in_feature": d.IN_FEATURE,
            "label_head": LabelHead(cfg, shape),
            "discretizer": Discretizer(cfg),
            "verifier": VerificationHead(cfg, shape),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_classes": d.NUM_CLASSES,
            "loss_weights": {
                "loss_binary": d.LOSS.BINARY_WEIGHT,
                "loss_pi": d.LOSS.PI_WEIGHT,
                "loss_ms": d.LOSS.MS_WEIGHT,
                "loss_quant": d.LOSS.QUANT_WEIGHT,
                "loss_cls": d.VERIFY.CLS_WEIGHT,
                "loss_iou": d.VERIFY.IOU_WEIGHT,
            },
            "binary_margin": d.LOSS.BINARY_MARGIN,
            "size_weight_max": d.LOSS.SIZE_WEIGHT_MAX,
            "pi_margin": d.LOSS.PI_MARGIN,
            "pi_diff_weight": d.LOSS.PI_DIFF_WEIGHT,
            "pi_sampling": d.LOSS.PI_SAMPLING,
            "pi_window": d.LOSS.PI_WINDOW,
            "pi_center": d.LOSS.PI_CENTER,
            "pi_dilation": d.LOSS.PI_DILATION,
            "pi_random_pixels": d.LOSS.PI_RANDOM_PIXELS,
            "pi_include_background": d.LOSS.PI_INCLUDE_BACKGROUND,
            "pi_pairs": d.LOSS.PI_PAIRS,
            "ms_normalization": d.LOSS.MS_NORMALIZATION,
            "huber_theta": d.LOSS.HUBER_THETA,
            "iou_high": d.VERIFY.IOU_HIGH,
            "iou_low": d.VERIFY.IOU_LOW,
            "add_gt_candidates": d.VERIFY.ADD_GT_CANDIDATES,
            "gt_candidates_start_iter": d.VERIFY.GT_CANDIDATES_START_ITER,
            "detach_verifier_features": d.VERIFY.DETACH_FEATURES,
            "score_cls_weight": d.VERIFY.SCORE_CLS_WEIGHT,
            "score_thresh": d.VERIFY.SCORE_THRESH,
            "max_detections": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs) -> ImageList:
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def _label_map(self, images: ImageList):
        feature = self.backbone(images.tensor)[self.in_feature]
        z = self.label_head(feature)
        valid = valid_mask(images.image_sizes, z.shape[1:], self.stride, z.device)
        return feature, z, valid

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        feature, z, valid = self._label_map(images)
        f = F.relu(z)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        t = label_targets(
            [instance_bitmasks(g) for g in gt],
            images.image_sizes,
            tuple(images.tensor.shape[-2:]),
            self.stride,
            self.size_weight_max,
        )
        losses = self.variational_losses(z, t)

        candidates = self.discretizer(f.detach(), valid)
        storage = get_event_storage()
        storage.put_scalar("dvis/num_candidates", sum(len(c) for c in candidates) / len(candidates))
        if self.add_gt_candidates and storage.iter >= self.gt_candidates_start_iter:
            candidates = [
                Candidates.cat([c, _gt_candidates(m, fi)])
                for c, m, fi in zip(candidates, t.masks, f.detach())
            ]
        cls_t, iou_t = zip(
            *[
                verification_targets(
                    c.masks, m, g.gt_classes, self.num_classes, self.iou_high, self.iou_low
                )
                for c, m, g in zip(candidates, t.masks, gt)
            ]
        )
        vfeature = feature.detach() if self.detach_verifier_features else feature
        logits, iou = self.verifier(vfeature, candidates, images.image_sizes)
        losses["loss_cls"], losses["loss_iou"] = verification_losses(
            logits, iou, torch.cat(cls_t), torch.cat(iou_t), self.huber_theta
        )
        return {k: v * self.loss_weights[k] for k, v in losses.items()}

    def variational_losses(self, z: torch.Tensor, t: LabelTargets) -> Dict[str, torch.Tensor]:
        """The four terms of the variational loss (eq. 2-7), not yet weighted.

        Args:
            z: (B, h, w) raw label-map output; ``f = ReLU(z)``.
            t: the targets at the label map's resolution.
        """
        f = F.relu(z)
        return {
            "loss_binary": L.binary_loss(
                z, t.ids, t.valid, t.weights, self.binary_margin, self.huber_theta
            ),
            "loss_pi": L.permutation_invariant_loss(
                f, t.ids, t.valid, offsets=self.pi_offsets, **self.pi
            ),
            "loss_ms": L.mumford_shah_loss(f, t.valid, self.ms_normalization),
            "loss_quant": L.quantization_loss(f, t.valid),
        }

    @torch.no_grad()
    def inference(self, batched_inputs, do_postprocess: bool = True):
        """Detections per image; with ``do_postprocess=False`` masks stay at label-map
        resolution (stride 4) and are not resized to the original image."""
        images = self.preprocess_image(batched_inputs)
        feature, z, valid = self._label_map(images)
        with stage("discretization"):
            candidates = self.discretizer(F.relu(z), valid)
        with stage("verification"):
            logits, iou = self.verifier(feature, candidates, images.image_sizes)
            scores, classes = verification_scores(logits, iou, self.score_cls_weight)
            results = [
                self._select(c, s, k)
                for c, s, k in zip(
                    candidates,
                    split_per_image(scores, candidates),
                    split_per_image(classes, candidates),
                )
            ]
        if not do_postprocess:
            return [{"instances": r} for r in results]
        return [
            {
                "instances": self.postprocess(
                    r, size, x.get("height", size[0]), x.get("width", size[1])
                )
            }
            for r, size, x in zip(results, images.image_sizes, batched_inputs)
        ]

    def _select(self, c: Candidates, scores: torch.Tensor, classes: torch.Tensor) -> Instances:
        """The candidates of one image scoring above ``score_thresh``, best first, at most
        ``max_detections``, as Instances at label-map resolution."""
        keep = torch.nonzero(scores > self.score_thresh)[:, 0]
        keep = keep[torch.argsort(scores[keep], descending=True)[: self.max_detections]]
        inst = Instances(tuple(c.masks.shape[1:]))
        inst.pred_masks = c.masks[keep]
        inst.scores = scores[keep]
        inst.pred_classes = classes[keep]
        return inst

    def postprocess(self, inst: Instances, image_size, height: int, width: int) -> Instances:
        """Label-map masks -> masks of the original image (upsampled x stride with aligned
        pixel centres, cropped to the image, resized), and their boxes."""
        out = Instances((height, width))
        out.scores = inst.scores
        out.pred_classes = inst.pred_classes
        m = aligned_bilinear(inst.pred_masks[:, None].float(), self.stride)
        m = m[:, :, : image_size[0], : image_size[1]]
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
        out.pred_masks = m[:, 0] > 0.5
        out.pred_boxes = Boxes(boxes_from_masks(out.pred_masks))
        return out


def _gt_candidates(masks: torch.Tensor, f: torch.Tensor) -> Candidates:
    """The non-empty GT masks (G, h, w) of an image as candidates (training only)."""
    masks = masks[masks.flatten(1).any(1)]
    area = masks.flatten(1).sum(1).clamp(min=1)
    values = (masks.flatten(1).float() @ f.reshape(-1).float()) / area
    return Candidates(masks, values, torch.full_like(area, -1))
