"""BlendMask's bottom module: K global bases at stride 4, and the auxiliary semantic head."""

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import Instances
from torch import nn

from instseg_d2.layers import conv_norm_relu, instance_bitmasks
from instseg_d2.modeling.refine import RefineAndSum


class ProtoNet(RefineAndSum):
    """Bases B (N, K, H/4, W/4) from P3-P5: ``refine`` each level to ``convs_dim`` channels,
    sum at P3 (bilinear upsampling), ``tower`` = ``num_convs`` conv3x3, x2 bilinear upsample,
    conv3x3, conv1x1 to K.

    With ``num_classes``, a semantic head on P3 (``seg_head``: 2 x (conv3x3, BN, ReLU), conv1x1
    to C + 1 labels) gives the auxiliary loss ``loss_basis_sem``.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        in_features: Sequence[str] = ("p3", "p4", "p5"),
        num_bases: int = 4,
        convs_dim: int = 128,
        num_convs: int = 3,
        norm: str = "SyncBN",
        num_classes=None,
        common_stride: int = 8,
        loss_weight: float = 0.3,
    ):
        super().__init__(
            input_shape, in_features, convs_dim, norm, aligned=False,
            config_key="MODEL.BASIS_MODULE.IN_FEATURES",
        )  # fmt: skip
        tower = [conv_norm_relu(convs_dim, convs_dim, 3, norm) for _ in range(num_convs)]
        tower += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            conv_norm_relu(convs_dim, convs_dim, 3, norm),
            nn.Conv2d(convs_dim, num_bases, 1),
        ]
        self.tower = nn.Sequential(*tower)
        self.loss_on = num_classes is not None
        if self.loss_on:
            in_ch = input_shape[self.in_features[0]].channels
            self.seg_head = nn.Sequential(
                nn.Conv2d(in_ch, convs_dim, 3, padding=1, bias=False),
                nn.BatchNorm2d(convs_dim),
                nn.ReLU(),
                nn.Conv2d(convs_dim, convs_dim, 3, padding=1, bias=False),
                nn.BatchNorm2d(convs_dim),
                nn.ReLU(),
                nn.Conv2d(convs_dim, num_classes + 1, 1),
            )
            self.common_stride = common_stride
            self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        b = cfg.MODEL.BASIS_MODULE
        return {
            "input_shape": input_shape,
            "in_features": b.IN_FEATURES,
            "num_bases": b.NUM_BASES,
            "convs_dim": b.CONVS_DIM,
            "num_convs": b.NUM_CONVS,
            "norm": b.NORM,
            "num_classes": b.NUM_CLASSES if b.LOSS_ON else None,
            "common_stride": b.COMMON_STRIDE,
            "loss_weight": b.LOSS_WEIGHT,
        }

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns the bases, (N, K, 2 H_p3, 2 W_p3)."""
        return self.tower(self.fuse(features))

    def semantic_loss(
        self, features: Dict[str, torch.Tensor], gt_instances: List[Instances]
    ) -> Dict[str, torch.Tensor]:
        """Cross-entropy of the semantic head against :func:`thing_semantic_targets`, x weight."""
        logits = self.seg_head(features[self.in_features[0]])
        targets = torch.stack(
            [thing_semantic_targets(x, logits.shape[-2:], self.common_stride) for x in gt_instances]
        )
        return {"loss_basis_sem": F.cross_entropy(logits, targets) * self.loss_weight}


def thing_semantic_targets(instances: Instances, out_size, stride: int) -> torch.Tensor:
    """Thing semantic map from the instance masks, computed on the fly.

    Each pixel gets 1 + the class of the last instance (in annotation order) covering it,
    0 for background; the map is sampled at ``[0::stride]`` (nearest downsampling of the padded
    map by ``1/stride``) and zero-padded to ``out_size``.

    Returns:
        (out_h, out_w) int64.
    """
    out = torch.zeros(tuple(out_size), dtype=torch.long, device=instances.gt_boxes.device)
    if len(instances) == 0:
        return out
    m = instance_bitmasks(instances, stride=stride, offset=0)
    g, h, w = m.shape
    order = torch.arange(1, g + 1, device=m.device)[:, None, None]
    last = (m * order).max(dim=0).values  # 1-based index of the last instance, 0 = none
    labels = torch.cat([last.new_zeros(1), instances.gt_classes.to(m.device) + 1])[last]
    out[: min(h, out.shape[0]), : min(w, out.shape[1])] = labels[: out.shape[0], : out.shape[1]]
    return out
