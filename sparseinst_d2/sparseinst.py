"""The SparseInst meta-architecture: backbone -> instance context encoder -> IAM decoder.

Training: bipartite matching + losses (:mod:`sparseinst_d2.loss`). Inference: one forward
pass gives N predictions per image; they are scored and rescored without NMS
(:mod:`sparseinst_d2.postprocess`).
"""

from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from .decoder import build_sparseinst_decoder
from .encoder import build_sparseinst_encoder
from .loss import SparseInstCriterion, target_masks
from .postprocess import detect, score_queries


@META_ARCH_REGISTRY.register()
class SparseInst(nn.Module):
    """SparseInst (Cheng et al., CVPR 2022): sparse instance activation maps, one prediction
    per activation map, bipartite matching in training and no NMS at inference."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        encoder: nn.Module,
        decoder: nn.Module,
        criterion: SparseInstCriterion,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        cls_threshold: float = 0.005,
        mask_threshold: float = 0.45,
        max_detections: int = 100,
    ):
        """
        Args:
            backbone, encoder, decoder: the network (see :mod:`.encoder`, :mod:`.decoder`).
            criterion: matcher and losses.
            pixel_mean, pixel_std: input normalisation, in ``INPUT.FORMAT`` channel order.
            size_divisibility: the batch is padded to a multiple of this.
            cls_threshold, mask_threshold, max_detections: see
                :func:`~sparseinst_d2.postprocess.score_queries`.
        """
        super().__init__()
        self.backbone, self.encoder, self.decoder = backbone, encoder, decoder
        self.criterion = criterion
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.size_divisibility = max(size_divisibility, backbone.size_divisibility)
        self.cls_threshold, self.mask_threshold = cls_threshold, mask_threshold
        self.max_detections = max_detections

    @classmethod
    def from_config(cls, cfg):
        si = cfg.MODEL.SPARSE_INST
        backbone = build_backbone(cfg)
        encoder = build_sparseinst_encoder(cfg, backbone.output_shape())
        decoder = build_sparseinst_decoder(cfg, encoder.out_channels)
        return {
            "backbone": backbone,
            "encoder": encoder,
            "decoder": decoder,
            "criterion": SparseInstCriterion(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "size_divisibility": si.SIZE_DIVISIBILITY,
            "cls_threshold": si.CLS_THRESHOLD,
            "mask_threshold": si.MASK_THRESHOLD,
            "max_detections": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise and pad the images to a (B, 3, H_pad, W_pad) batch."""
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(images, self.size_divisibility)

    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The network on a normalised, padded batch (B, 3, H, W); see the decoder's outputs."""
        return self.decoder(self.encoder(self.backbone(images)))

    def forward(self, batched_inputs: List[Dict]):
        """Losses in training; in inference a list of ``{"instances": Instances}``."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor)
        gt = [x["instances"].to(self.device) for x in batched_inputs]
        targets = target_masks(gt, images.tensor.shape[-2:], outputs["pred_masks"].shape[-2:])
        return self.criterion(outputs, targets, [g.gt_classes for g in gt])

    def inference(self, batched_inputs: List[Dict], do_postprocess: bool = True):
        """Detections per image.

        With ``do_postprocess``: ``pred_masks`` (bool) at the original image's size
        (``height``, ``width``; the input's size if absent), ``scores``, ``pred_classes`` and
        ``pred_boxes`` (of the masks). Without: the raw predictions at network resolution, as
        the benchmark times the model: ``scores``, ``pred_classes`` and ``pred_mask_probs``
        (M, H_pad/4, W_pad/4), the rescored queries' mask probabilities over the padded input,
        not yet upsampled (the analogue of Mask R-CNN's 28x28 masks before pasting).
        """
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor)
        padded = tuple(images.tensor.shape[-2:])
        results = []
        for i, size in enumerate(images.image_sizes):
            logits = outputs["pred_logits"][i]
            mask_logits = outputs["pred_masks"][i]
            objectness = outputs["pred_objectness"][i]
            if not do_postprocess:
                scores, classes, probs, keep = score_queries(
                    logits, mask_logits, objectness, self.cls_threshold, self.mask_threshold,
                    self.max_detections,
                )  # fmt: skip
                inst = Instances(tuple(probs.shape[-2:]))
                inst.scores, inst.pred_classes = scores[keep], classes[keep]
                inst.pred_mask_probs = probs[keep]
                results.append({"instances": inst})
                continue
            out_size = (
                batched_inputs[i].get("height", size[0]),
                batched_inputs[i].get("width", size[1]),
            )
            scores, classes, masks, boxes = detect(
                logits, mask_logits, objectness, padded, tuple(size), out_size,
                self.cls_threshold, self.mask_threshold, self.max_detections,
            )  # fmt: skip
            inst = Instances(out_size)
            inst.pred_masks = masks
            inst.pred_boxes = Boxes(boxes)
            inst.scores = scores
            inst.pred_classes = classes
            results.append({"instances": inst})
        return results
