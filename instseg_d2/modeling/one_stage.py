"""A plain one-stage box detector: backbone + a dense proposal generator (FCOS)."""

from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.modeling import build_backbone, build_proposal_generator
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.meta_arch.build import META_ARCH_REGISTRY
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList, Instances
from torch import nn


@META_ARCH_REGISTRY.register()
class OneStageDetector(nn.Module):
    """Backbone + FCOS; FCOS's detections are the output (``MODEL.META_ARCHITECTURE:
    OneStageDetector``, ``MODEL.PROPOSAL_GENERATOR.NAME: FCOS``).

    Also the base of CondInst and BlendMask, which add a top module (run by FCOS on its box
    tower) and a mask branch: subclasses override :meth:`top_module`, :meth:`prepare_targets`,
    :meth:`mask_losses`, :meth:`predict_masks` and :meth:`postprocess`.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        proposal_generator: nn.Module,
        pixel_mean: List[float],
        pixel_std: List[float],
    ):
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def top_module(self):
        """The module FCOS runs on its box tower (None for plain detection)."""
        return None

    def forward(self, batched_inputs: List[dict]):
        """Losses in training; in inference a list of ``{"instances": Instances}`` at the
        original image sizes (``height``/``width`` of the inputs)."""
        if not self.training:
            return self.inference(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError(f"{type(self).__name__} in training mode needs 'instances' in inputs")
        images = self.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        self.prepare_targets(images, gt_instances)
        features = self.backbone(images.tensor)
        extras, losses = self.proposal_generator(images, features, gt_instances, self.top_module())
        losses.update(self.mask_losses(images, features, extras, gt_instances))
        return losses

    def prepare_targets(self, images: ImageList, gt_instances: List[Instances]) -> None:
        """Add what the mask branch needs to the GT (e.g. masks at the padded size); none here."""

    def mask_losses(self, images: ImageList, features, extras: dict, gt_instances) -> Dict:
        """Losses of the mask branch given FCOS's positive locations (none here)."""
        return {}

    def predict_masks(self, images: ImageList, features, detections: List[Instances]):
        """Add mask predictions to FCOS's detections, at network resolution (none here)."""
        return detections

    def inference(self, batched_inputs: List[dict], do_postprocess: bool = True):
        """Detections; with ``do_postprocess=False`` at network resolution (no resizing)."""
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        detections, _ = self.proposal_generator(images, features, None, self.top_module())
        detections = self.predict_masks(images, features, detections)
        if not do_postprocess:
            return detections
        return [
            {"instances": self.postprocess(det, x, images)}
            for det, x in zip(detections, batched_inputs)
        ]

    def postprocess(self, det: Instances, batched_input: dict, images: ImageList) -> Instances:
        """Rescale one image's detections to its original size."""
        h = batched_input.get("height", det.image_size[0])
        w = batched_input.get("width", det.image_size[1])
        det = Instances(
            det.image_size,
            **{
                k: v
                for k, v in det.get_fields().items()
                if k in ("pred_boxes", "scores", "pred_classes", "pred_masks")
            },
        )
        return detector_postprocess(det, h, w)
