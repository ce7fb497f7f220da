"""The SOLO meta-architecture: backbone + FPN, one SOLO head (v1, decoupled or v2), grid
targets, focal + dice losses, point NMS / maskness / Matrix NMS inference."""

from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from instseg_d2.layers import boxes_from_masks, instance_bitmasks

from .heads import SOLOv2Head, build_solo_head, rescale_instance_levels
from .losses import solo_losses
from .postprocess import SOLOPostProcessor, masks_to_image
from .reference_rules import reference_mask_targets
from .targets import TARGET_RULES, LevelTargets, mask_targets, solo_targets


@META_ARCH_REGISTRY.register()
class SOLO(nn.Module):
    """SOLO / Decoupled SOLO / SOLOv2 ("segmenting objects by locations").

    The image is divided into an S x S grid per level; the cell containing an object's centre
    predicts its class (category branch) and its mask (mask branch of the head selected by
    ``MODEL.SOLO.HEAD_NAME``). Training: :mod:`solo_d2.targets`, :mod:`solo_d2.losses`.
    Inference: :class:`solo_d2.postprocess.SOLOPostProcessor`; boxes come from the masks.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        head: nn.Module,
        postprocessor: SOLOPostProcessor,
        instance_in_features: List[str],
        num_grids: List[int],
        scale_ranges: List[List[float]],
        sigma: float,
        num_classes: int,
        pixel_mean: List[float],
        pixel_std: List[float],
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        focal_weight: float = 1.0,
        dice_weight: float = 3.0,
        dice_eps: float = 2e-3,
        target_rules: str = "paper",
    ):
        super().__init__()
        if target_rules not in TARGET_RULES:
            raise ValueError(
                f"MODEL.SOLO.TARGET_RULES must be one of {TARGET_RULES}, got {target_rules!r}"
            )
        if target_rules == "reference" and not isinstance(head, SOLOv2Head):
            raise ValueError(
                "MODEL.SOLO.TARGET_RULES 'reference' is AdelaiDet's SOLOv2 rules: it needs "
                f"MODEL.SOLO.HEAD_NAME SOLOv2Head, got {type(head).__name__}"
            )
        self.target_rules = target_rules
        self.backbone = backbone
        self.head = head
        self.postprocessor = postprocessor
        self.instance_in_features = list(instance_in_features)
        self.num_grids = list(num_grids)
        self.scale_ranges = [tuple(r) for r in scale_ranges]
        self.sigma = sigma
        self.num_classes = num_classes
        self.loss_args = dict(
            focal_alpha=focal_alpha,
            focal_gamma=focal_gamma,
            focal_weight=focal_weight,
            dice_weight=dice_weight,
            dice_eps=dice_eps,
        )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        s = cfg.MODEL.SOLO
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        _check_levels(s, shapes)
        return {
            "backbone": backbone,
            "head": build_solo_head(cfg, shapes),
            "postprocessor": SOLOPostProcessor(cfg),
            "instance_in_features": list(s.INSTANCE_IN_FEATURES),
            "num_grids": list(s.NUM_GRIDS),
            "scale_ranges": [list(r) for r in s.FPN_SCALE_RANGES],
            "sigma": s.SIGMA,
            "num_classes": s.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "focal_alpha": s.LOSS.FOCAL_ALPHA,
            "focal_gamma": s.LOSS.FOCAL_GAMMA,
            "focal_weight": s.LOSS.FOCAL_WEIGHT,
            "dice_weight": s.LOSS.DICE_WEIGHT,
            "dice_eps": s.LOSS.DICE_EPS,
            "target_rules": s.TARGET_RULES,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise, pad to the backbone's size divisibility and batch."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]  # fmt: skip
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def run_head(self, images: torch.Tensor) -> Dict:
        """(N, 3, H, W) normalised padded images -> the head's outputs."""
        features = self.backbone(images)
        feats = rescale_instance_levels([features[f] for f in self.instance_in_features])
        return self.head(feats, features)

    def forward(self, batched_inputs: List[Dict]):
        """Training: dict of losses (``loss_cate``, ``loss_ins``). Inference: see
        :meth:`inference`."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        outputs = self.run_head(images.tensor)
        return self.losses(outputs, gt, tuple(images.tensor.shape[-2:]))

    @torch.no_grad()
    def assign(self, gt_instances: List[Instances], padded_size) -> Tuple[List, List]:
        """Grid targets of a batch (:class:`~solo_d2.targets.LevelTargets` per level, by
        ``MODEL.SOLO.TARGET_RULES``) and the GT masks padded to ``padded_size`` (per image)."""
        masks = [instance_bitmasks(inst, pad_to=padded_size) for inst in gt_instances]
        targets = solo_targets(
            gt_instances, masks, self.num_grids, self.scale_ranges, self.sigma,
            self.num_classes, self.target_rules,
        )  # fmt: skip
        return targets, masks

    def mask_targets(self, t: LevelTargets, masks, gt_instances, size, cache) -> torch.Tensor:
        """(P, h, w) mask targets of a level's positives at the prediction's ``size``."""
        if self.target_rules == "reference":
            sizes = [inst.image_size for inst in gt_instances]
            return reference_mask_targets(t.pos, masks, sizes, size, cache)
        return mask_targets(t.pos, masks, size, cache)

    def losses(self, outputs: Dict, gt_instances: List[Instances], padded_size) -> Dict:
        targets, masks = self.assign(gt_instances, padded_size)
        probs, tgts, cache = [], [], {}
        for level, t in enumerate(targets):
            if len(t.pos):
                p = self.head.mask_probs(outputs, level, t.pos[:, 0], t.pos[:, 1])
                probs.append(p)
                tgts.append(self.mask_targets(t, masks, gt_instances, p.shape[-2:], cache))
        losses = solo_losses(
            outputs["cate"], [t.labels for t in targets], probs, tgts, self.num_classes,
            **self.loss_args,
        )  # fmt: skip
        if not probs:  # keep the mask branch in the graph (DDP) when nothing is positive
            zero = torch.zeros(1, dtype=torch.int64, device=self.device)
            losses["loss_ins"] = (
                losses["loss_ins"] + 0.0 * self.head.mask_probs(outputs, 0, zero, zero).sum()
            )
        return losses

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """List of ``{"instances": Instances}`` with ``pred_masks`` (bool), ``scores``,
        ``pred_classes`` and ``pred_boxes`` (from the masks): at the original image size
        (``height`` / ``width``), or with ``do_postprocess=False`` at the network input size."""
        images = self.preprocess_image(batched_inputs)
        outputs = self.run_head(images.tensor)
        padded = images.tensor.shape[-2:]
        mask_size = (padded[0] // 4, padded[1] // 4)
        results = []
        for b, (x, (h, w)) in enumerate(zip(batched_inputs, images.image_sizes)):
            det = self.postprocessor(self.head, outputs, b, mask_size)
            out_size = (x.get("height", h), x.get("width", w)) if do_postprocess else (h, w)
            masks = masks_to_image(det.probs, (h, w), out_size, self.postprocessor.mask_thr)
            inst = Instances(out_size)
            inst.pred_masks = masks
            inst.scores = det.scores
            inst.pred_classes = det.classes
            inst.pred_boxes = Boxes(boxes_from_masks(masks))
            results.append({"instances": inst})
        return results


def _check_levels(s, shapes) -> None:
    """Config consistency: every per-level key has one value per instance level, the features
    exist, and their strides after re-scaling are MODEL.SOLO.FPN_INSTANCE_STRIDES."""
    n = len(s.INSTANCE_IN_FEATURES)
    for key in ("FPN_INSTANCE_STRIDES", "FPN_SCALE_RANGES", "NUM_GRIDS"):
        if len(s[key]) != n:
            raise ValueError(
                f"MODEL.SOLO.{key} has {len(s[key])} values for {n} levels "
                f"(MODEL.SOLO.INSTANCE_IN_FEATURES={list(s.INSTANCE_IN_FEATURES)})"
            )
    for key in ("INSTANCE_IN_FEATURES", "MASK_IN_FEATURES"):
        missing = [f for f in s[key] if f not in shapes]
        if missing:
            raise ValueError(
                f"MODEL.SOLO.{key}: {missing} not among backbone outputs {list(shapes)}"
            )
    raw = [shapes[f].stride for f in s.INSTANCE_IN_FEATURES]
    eff = [2 * raw[0]] + raw[1:-1] + [raw[-2]]
    if eff != list(s.FPN_INSTANCE_STRIDES):
        raise ValueError(
            f"MODEL.SOLO.FPN_INSTANCE_STRIDES={list(s.FPN_INSTANCE_STRIDES)} but the re-scaled "
            f"levels {list(s.INSTANCE_IN_FEATURES)} have strides {eff}"
        )
