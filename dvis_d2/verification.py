"""Verification of the candidate segments: class and IoU of each (paper Sec. 4)."""

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ROIAlign, cat, get_norm
from torch import nn

from instseg_d2.layers import boxes_from_masks

from .discretization import Candidates
from .losses import huber


class VerificationHead(nn.Module):
    """RoIAlign features of each candidate's box, concatenated with its mask, through a small
    CNN (5 convs, 2 FCs: 7 layers as the paper) into class logits and a predicted IoU.

    Layers (research code, widths configurable): 1x1 conv D, 3x3 conv D x2, 3x3 conv 2D x2
    (each with ``norm``, then LeakyReLU 0.1), 2x2 max-pool, FC ``fc_dim``, then one FC to ``num_classes + 1`` logits
    (last = background) and one FC to the IoU (ReLU).
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        feature_stride: int = 8,
        mask_stride: int = 4,
        roi_size: int = 14,
        conv_dim: int = 256,
        fc_dim: int = 1024,
        box_extend: float = 0.2,
        norm: str = "GN",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.mask_stride = mask_stride
        self.box_extend = box_extend
        self.feature_pool = ROIAlign((roi_size, roi_size), 1.0 / feature_stride, 0, aligned=True)
        self.mask_pool = ROIAlign((roi_size, roi_size), 1.0 / mask_stride, 0, aligned=True)
        d = conv_dim
        layers, c_in = [], in_channels + 1
        for c_out, k in ((d, 1), (d, 3), (d, 3), (2 * d, 3), (2 * d, 3)):
            conv = Conv2d(c_in, c_out, k, padding=k // 2, bias=not norm, norm=get_norm(norm, c_out))
            layers += [conv, nn.LeakyReLU(0.1)]
            c_in = c_out
        self.convs = nn.Sequential(*layers, nn.MaxPool2d(2))
        self.fc = nn.Sequential(nn.Linear(2 * d * (roi_size // 2) ** 2, fc_dim), nn.LeakyReLU(0.1))
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.iou_pred = nn.Linear(fc_dim, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=0.1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.iou_pred.weight, std=0.01)

    @classmethod
    def from_config(cls, cfg, input_shape):
        v = cfg.MODEL.DVIS.VERIFY
        return {
            "in_channels": input_shape.channels,
            "num_classes": cfg.MODEL.DVIS.NUM_CLASSES,
            "feature_stride": input_shape.stride,
            "mask_stride": input_shape.stride // 2,
            "roi_size": v.ROI_SIZE,
            "conv_dim": v.CONV_DIM,
            "fc_dim": v.FC_DIM,
            "box_extend": v.BOX_EXTEND,
            "norm": v.NORM,
        }

    def boxes(self, masks: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """Image-coordinate boxes (x0, y0, x1, y1) of label-map masks (N, h, w), enlarged by
        ``box_extend`` around their centre and clipped to the image."""
        b = boxes_from_masks(masks) * self.mask_stride
        ctr = (b[:, :2] + b[:, 2:]) / 2
        half = (b[:, 2:] - b[:, :2]) * (1 + self.box_extend) / 2
        b = torch.cat([ctr - half, ctr + half], dim=1)
        h, w = image_size
        return torch.stack(
            [b[:, 0].clamp(0, w), b[:, 1].clamp(0, h), b[:, 2].clamp(0, w), b[:, 3].clamp(0, h)],
            dim=1,
        )

    def forward(
        self,
        features: torch.Tensor,
        candidates: Sequence[Candidates],
        image_sizes: Sequence[Tuple[int, int]],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits and IoU of every candidate of the batch, in image order.

        Args:
            features: (B, C, H / feature_stride, W / feature_stride).
            candidates: per image, masks at stride ``mask_stride``.

        Returns:
            ``(logits, iou)``: (R, num_classes + 1) and (R,), R = total number of candidates.
        """
        boxes = [self.boxes(c.masks, s) for c, s in zip(candidates, image_sizes)]
        idx = cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])
        boxes = cat(boxes)
        masks = cat([c.masks for c in candidates]).float()
        x = self.feature_pool(features, torch.cat([idx, boxes], dim=1))
        own = torch.arange(masks.shape[0], dtype=boxes.dtype, device=boxes.device)[:, None]
        m = self.mask_pool(masks[:, None], torch.cat([own, boxes], dim=1))
        x = self.fc(self.convs(torch.cat([x, m], dim=1)).flatten(1))
        return self.cls_score(x), F.relu(self.iou_pred(x)[:, 0])


def verification_losses(
    logits: torch.Tensor,
    iou: torch.Tensor,
    gt_classes: torch.Tensor,
    gt_iou: torch.Tensor,
    theta: float = 0.1,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the classifier over the candidates with a class target (``gt_classes >=
    0``; the last class is background) and Huber loss ``L_h(|iou - gt_iou|)`` of the IoU head
    over every candidate. Both are means (0 without candidates).

    Args:
        logits: (R, K + 1); iou, gt_iou: (R,); gt_classes: (R,) long, -1 = ignored.
    """
    keep = gt_classes >= 0
    if keep.any():
        loss_cls = F.cross_entropy(logits[keep], gt_classes[keep])
    else:
        loss_cls = logits.sum() * 0.0
    if iou.numel():
        loss_iou = huber((iou - gt_iou).abs(), theta).mean()
    else:
        loss_iou = iou.sum() * 0.0
    return loss_cls, loss_iou


def verification_scores(
    logits: torch.Tensor, iou: torch.Tensor, cls_weight: float = 0.5
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class and COCO score of each candidate: the most likely foreground class ``c`` with
    probability ``p`` (softmax over all classes), and score ``w * p + (1 - w) * iou`` (the
    paper's weighted sum of class confidence and predicted IoU; IoU clamped to [0, 1]).

    Returns:
        ``(scores, classes)``: (R,) float and (R,) long.
    """
    probs = F.softmax(logits, dim=1)[:, :-1]
    p, classes = probs.max(dim=1)
    return cls_weight * p + (1 - cls_weight) * iou.clamp(0, 1), classes
