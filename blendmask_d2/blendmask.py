"""BlendMask (Chen et al., CVPR 2020): FCOS + bottom bases + per-instance attentions, blended."""

from typing import List

from detectron2.config import configurable
from detectron2.modeling.meta_arch.build import META_ARCH_REGISTRY

from instseg_d2.modeling import OneStageDetector
from instseg_d2.modeling.refine import top_conv
from instseg_d2.utils.profiling import stage

from .basis_module import ProtoNet
from .blender import Blender


@META_ARCH_REGISTRY.register()
class BlendMask(OneStageDetector):
    """FCOS whose box tower also predicts, per location, K attention maps of M x M (the
    ``top_layer``, K*M*M channels); the bottom module (``basis_module``) predicts K bases for the
    whole image; the ``blender`` mixes the bases cropped to each box with its attentions.

    Losses: FCOS's, ``loss_mask`` (x ``instance_loss_weight``) and, with the semantic head,
    ``loss_basis_sem``. Masks are pasted into the image by ``detector_postprocess`` (0.5).
    """

    @configurable
    def __init__(
        self,
        *,
        basis_module: ProtoNet,
        blender: Blender,
        instance_loss_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.basis_module = basis_module
        self.blender = blender
        self.instance_loss_weight = instance_loss_weight
        self.top_layer = top_conv(
            self.proposal_generator.in_channels_to_top_module, blender.attn_len
        )

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret.update(
            basis_module=ProtoNet(cfg, ret["backbone"].output_shape()),
            blender=Blender(cfg),
            instance_loss_weight=cfg.MODEL.BLENDMASK.INSTANCE_LOSS_WEIGHT,
        )
        return ret

    def top_module(self):
        return self.top_layer

    def prepare_targets(self, images, gt_instances) -> None:
        for inst in gt_instances:
            if not inst.has("gt_masks"):
                raise ValueError("BlendMask needs instance masks (gt_masks) for training")

    def mask_losses(self, images, features, extras, gt_instances):
        bases = self.basis_module(features)
        losses = self.blender.loss(bases, extras["instances"], extras["loss_denorm"], gt_instances)
        losses = {k: v * self.instance_loss_weight for k, v in losses.items()}
        if self.basis_module.loss_on:
            losses.update(self.basis_module.semantic_loss(features, gt_instances))
        return losses

    def predict_masks(self, images, features, detections: List):
        bases = self.basis_module(features)
        with stage("blender"):
            return self.blender(bases, detections)
