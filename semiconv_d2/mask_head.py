"""The semi-convolutional mask head: Mask R-CNN's mask head + seed, kernel and score fusion."""

import math
from typing import Dict, List, Union

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling.roi_heads.mask_head import (
    ROI_MASK_HEAD_REGISTRY,
    MaskRCNNConvUpsampleHead,
    mask_rcnn_inference,
    mask_rcnn_loss,
)
from detectron2.structures import Instances
from torch import nn

from .kernel import fuse_scores, hard_seed, log_steered_bilateral_kernel, soft_seed
from .losses import kernel_bce_loss


def gt_mask_crops(instances: List[Instances], side: int, device) -> torch.Tensor:
    """Ground-truth masks of the proposals' matched instances cropped to their boxes.

    Same targets as detectron2's ``mask_rcnn_loss`` (RoIAlign of the mask in the proposal box).

    Returns:
        (R, side, side) float in [0, 1].
    """
    crops = [
        x.gt_masks.crop_and_resize(x.proposal_boxes.tensor, side).to(device)
        for x in instances
        if len(x) > 0
    ]
    if not crops:
        return torch.zeros(0, side, side, device=device)
    return cat(crops, dim=0).float()


@ROI_MASK_HEAD_REGISTRY.register()
class SemiConvMaskHead(MaskRCNNConvUpsampleHead):
    """Mask R-CNN's conv-upsample head whose score s is refined by the steered bilateral kernel.

    ``forward(x, instances, embeddings)``: ``x`` the pooled RoI features, ``embeddings`` the
    (R, D, M, M) embeddings Psi cropped to the same RoIs at the mask resolution M. The score s
    of the class (ground truth in training, predicted at inference) gives the seed; the output
    is s_hat = s + log K_sigma(u_s, u). Training losses: ``loss_mask`` (Mask R-CNN's BCE, on
    s_hat or s, MODEL.SEMICONV.MASK_LOSS_ON_FUSED) and ``loss_kernel`` (BCE of K vs the mask).
    """

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        sigma_init: float = 1.0,
        kernel_loss_weight: float = 1.0,
        mask_loss_on_fused: bool = True,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: as :class:`MaskRCNNConvUpsampleHead`.
            sigma_init: initial sigma of the kernel (> 0); sigma is learnt as log sigma.
            kernel_loss_weight: weight of ``loss_kernel``.
            mask_loss_on_fused: Mask R-CNN's mask loss on s_hat (True) or on s (False).
        """
        super().__init__(input_shape, **kwargs)
        if not sigma_init > 0:
            raise ValueError(f"MODEL.SEMICONV.SIGMA_INIT={sigma_init} must be > 0")
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma_init)))
        self.kernel_loss_weight = kernel_loss_weight
        self.mask_loss_on_fused = mask_loss_on_fused

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(
            sigma_init=cfg.MODEL.SEMICONV.SIGMA_INIT,
            kernel_loss_weight=cfg.MODEL.SEMICONV.KERNEL_LOSS_WEIGHT,
            mask_loss_on_fused=cfg.MODEL.SEMICONV.MASK_LOSS_ON_FUSED,
        )
        return ret

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(
        self, x: torch.Tensor, instances: List[Instances], embeddings: torch.Tensor = None
    ) -> Union[Dict[str, torch.Tensor], List[Instances]]:
        """
        Args:
            x: (R, C, P, P) pooled RoI features.
            instances: per image, the foreground proposals (training, with ``gt_classes``,
                ``gt_masks``, ``proposal_boxes``) or the detections (``pred_classes``).
            embeddings: (R, D, M, M) Psi cropped to the same RoIs, M the mask resolution.

        Returns:
            training: dict with ``loss_mask`` and ``loss_kernel``; inference: ``instances``
            with ``pred_masks`` (R_i, 1, M, M) = sigmoid(s_hat).
        """
        if embeddings is None:
            raise ValueError("SemiConvMaskHead needs the RoI embeddings: use SemiConvROIHeads")
        logits = self.layers(x)  # (R, C, M, M)
        if embeddings.shape[0] != logits.shape[0] or embeddings.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"RoI embeddings {tuple(embeddings.shape)} do not match the mask logits "
                f"{tuple(logits.shape)}: the embedding crop must have the mask resolution"
            )
        field = "gt_classes" if self.training else "pred_classes"
        classes = cat([getattr(i, field) for i in instances]) if logits.size(1) > 1 else None
        rows = torch.arange(logits.shape[0], device=logits.device)
        s = logits[:, 0] if classes is None else logits[rows, classes]
        seed = (soft_seed if self.training else hard_seed)(embeddings, s)
        log_k = log_steered_bilateral_kernel(embeddings, seed, self.sigma)
        fused = fuse_scores(s, log_k)[:, None]  # (R, 1, M, M)
        if not self.training:
            mask_rcnn_inference(fused, instances)
            return instances
        mask_logits = fused if self.mask_loss_on_fused else s[:, None]
        gt = gt_mask_crops(instances, s.shape[-1], s.device)
        return {
            "loss_mask": mask_rcnn_loss(mask_logits, instances, self.vis_period) * self.loss_weight,
            "loss_kernel": kernel_bce_loss(log_k, gt) * self.kernel_loss_weight,
        }
