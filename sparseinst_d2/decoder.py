"""IAM-based decoders (paper Sec. 3.3): instance branch with instance activation maps, mask
branch, and the masks as products of the instance kernels with the mask features.

Variants live in ``SPARSEINST_DECODER_REGISTRY`` (names as the reference's):

* ``BaseIAMDecoder``: F_iam is one 3x3 conv giving N maps (IAM);
* ``GroupIAMDecoder``: F_iam is a 3x3 conv with G groups giving G maps per instance; the G
  aggregated features of an instance are concatenated and fused by a linear layer + ReLU
  (G-IAM, G = ``MODEL.SPARSE_INST.DECODER.GROUPS``);
* ``GroupIAMSoftDecoder``: G-IAM whose maps are normalised by a softmax over the pixels
  (with a learnt bias) instead of sigmoid / sum.
"""

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from fvcore.nn.weight_init import c2_msra_fill, c2_xavier_fill
from torch import nn

from .registry import SPARSEINST_DECODER_REGISTRY, lookup


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """The (x, y) coordinate channels of ``instseg_d2.layers.coordinate_features`` for the map
    ``x`` (B, C, H, W), each in [-1, 1], as ``-1 + 2 i / (n - 1)`` (the reference's formula):
    computed with ``arange`` rather than ``linspace`` so that ``torch.export`` keeps H and W
    dynamic (``linspace`` specialises its length). Returns (B, 2, H, W)."""
    b, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype) * (2.0 / max(h - 1, 1)) - 1.0
    xs = torch.arange(w, device=x.device, dtype=x.dtype) * (2.0 / max(w - 1, 1)) - 1.0
    return torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])[None].expand(
        b, 2, h, w
    )


def _conv_stack(num_convs: int, in_channels: int, dim: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv + ReLU), MSRA-initialised."""
    convs = []
    for i in range(num_convs):
        conv = Conv2d(in_channels if i == 0 else dim, dim, 3, padding=1, activation=F.relu)
        c2_msra_fill(conv)
        convs.append(conv)
    return nn.Sequential(*convs)


class InstanceBranch(nn.Module):
    """Instance features from instance activation maps, and the per-instance predictions.

    ``A = F_iam(X)`` (B, N*G, H, W); each map is normalised over the pixels (sigmoid, divided
    by its sum; or softmax), and the instance features are ``z = A_bar . X^T`` (B, N*G, D).
    With groups (G-IAM) the G features of an instance are concatenated (B, N, G*D) and fused by
    ``ReLU(Linear)``. Linear heads give class logits, mask kernels and objectness.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        dim: int,
        num_convs: int,
        num_masks: int,
        num_classes: int,
        kernel_dim: int,
        groups: int = 1,
        group_fc: bool = False,
        softmax: bool = False,
        prior_prob: float = 0.01,
    ):
        super().__init__()
        if groups < 1 or (groups > 1 and not group_fc):
            raise ValueError(f"InstanceBranch: groups={groups} needs group_fc (G-IAM)")
        self.num_masks, self.groups = num_masks, groups
        self.convs = _conv_stack(num_convs, in_channels, dim)
        self.iam_conv = nn.Conv2d(dim, num_masks * groups, 3, padding=1, groups=groups)
        feat_dim = dim * groups
        self.fc = nn.Linear(feat_dim, feat_dim) if group_fc else None
        self.cls_score = nn.Linear(feat_dim, num_classes)
        self.mask_kernel = nn.Linear(feat_dim, kernel_dim)
        self.objectness = nn.Linear(feat_dim, 1)
        # softmax variant: softmax(A + b) over the pixels, b learnt (reference init 1.0)
        self.softmax_bias = nn.Parameter(torch.ones(1)) if softmax else None

        bias = -math.log((1 - prior_prob) / prior_prob)
        for m in (self.iam_conv, self.cls_score):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.constant_(m.bias, bias)
        nn.init.normal_(self.mask_kernel.weight, std=0.01)
        nn.init.constant_(self.mask_kernel.bias, 0.0)
        if self.fc is not None:
            c2_xavier_fill(self.fc)

    def normalize(self, iam: torch.Tensor) -> torch.Tensor:
        """Activation-map logits (B, N*G, H, W) -> the pooling weights ``A_bar`` (B, N*G, HW),
        each row summing to 1: ``sigmoid(A) / sum(sigmoid(A))``, or ``softmax(A + b)``."""
        a = iam.flatten(2)
        if self.softmax_bias is not None:
            return F.softmax(a + self.softmax_bias, dim=-1)
        a = a.sigmoid()
        return a / a.sum(dim=-1, keepdim=True).clamp(min=1e-6)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            x: (B, C, H, W) encoder features with the two coordinate channels.

        Returns:
            logits (B, N, K), kernels (B, N, D_k), objectness logits (B, N, 1) and the
            activation-map logits (B, N*G, H, W).
        """
        x = self.convs(x)
        iam = self.iam_conv(x)
        b, d = x.shape[:2]
        z = torch.bmm(self.normalize(iam), x.flatten(2).transpose(1, 2))  # (B, N*G, D)
        if self.fc is not None:
            # channel g*N + n of F_iam is group g of instance n
            z = z.reshape(b, self.groups, self.num_masks, d).transpose(1, 2)
            z = F.relu(self.fc(z.reshape(b, self.num_masks, self.groups * d)))
        return self.cls_score(z), self.mask_kernel(z), self.objectness(z), iam


class MaskBranch(nn.Module):
    """``num_convs`` x (3x3 conv + ReLU), then a 1x1 projection to the kernel length."""

    def __init__(self, in_channels: int, *, dim: int, num_convs: int, kernel_dim: int):
        super().__init__()
        self.convs = _conv_stack(num_convs, in_channels, dim)
        self.projection = Conv2d(dim, kernel_dim, 1)
        c2_msra_fill(self.projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> mask features (B, D_k, H, W)."""
        return self.projection(self.convs(x))


@SPARSEINST_DECODER_REGISTRY.register()
class BaseIAMDecoder(nn.Module):
    """IAM decoder: location-sensitive features (coordinates concatenated to the encoder
    output), instance branch and mask branch, masks ``m_i = w_i . M`` upsampled by
    ``scale_factor`` (stride 8 -> 4)."""

    @configurable
    def __init__(self, *, inst_branch: InstanceBranch, mask_branch: MaskBranch, scale_factor=2.0):
        super().__init__()
        self.inst_branch = inst_branch
        self.mask_branch = mask_branch
        self.scale_factor = float(scale_factor)

    @classmethod
    def branch_variant(cls, cfg) -> dict:
        """How the instance branch differs between the registered decoders."""
        return {"groups": 1, "group_fc": False, "softmax": False}

    @classmethod
    def from_config(cls, cfg, in_channels: int):
        dec = cfg.MODEL.SPARSE_INST.DECODER
        in_channels = in_channels + 2  # coordinate features
        inst = InstanceBranch(
            in_channels,
            dim=dec.INST.DIM,
            num_convs=dec.INST.CONVS,
            num_masks=dec.NUM_MASKS,
            num_classes=dec.NUM_CLASSES,
            kernel_dim=dec.KERNEL_DIM,
            prior_prob=dec.PRIOR_PROB,
            **cls.branch_variant(cfg),
        )
        mask = MaskBranch(
            in_channels, dim=dec.MASK.DIM, num_convs=dec.MASK.CONVS, kernel_dim=dec.KERNEL_DIM
        )
        return {"inst_branch": inst, "mask_branch": mask, "scale_factor": dec.SCALE_FACTOR}

    def forward(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            features: (B, C, H, W) encoder output (stride 8).

        Returns:
            dict with ``pred_logits`` (B, N, K), ``pred_masks`` (B, N, s*H, s*W) mask logits,
            ``pred_objectness`` (B, N, 1) and ``pred_iam`` (B, N*G, H, W).
        """
        b, _, h, w = features.shape
        x = torch.cat([coordinate_channels(features), features], dim=1)
        logits, kernels, objectness, iam = self.inst_branch(x)
        mask_features = self.mask_branch(x)
        masks = torch.bmm(kernels, mask_features.flatten(2)).view(b, -1, h, w)
        masks = F.interpolate(
            masks, scale_factor=self.scale_factor, mode="bilinear", align_corners=False
        )
        return {
            "pred_logits": logits,
            "pred_masks": masks,
            "pred_objectness": objectness,
            "pred_iam": iam,
        }


@SPARSEINST_DECODER_REGISTRY.register()
class GroupIAMDecoder(BaseIAMDecoder):
    """G-IAM: ``MODEL.SPARSE_INST.DECODER.GROUPS`` activation maps per instance."""

    @classmethod
    def branch_variant(cls, cfg) -> dict:
        groups = cfg.MODEL.SPARSE_INST.DECODER.GROUPS
        if groups < 1:
            raise ValueError(f"MODEL.SPARSE_INST.DECODER.GROUPS={groups}: must be >= 1")
        return {"groups": groups, "group_fc": True, "softmax": False}


@SPARSEINST_DECODER_REGISTRY.register()
class GroupIAMSoftDecoder(BaseIAMDecoder):
    """G-IAM with softmax-normalised activation maps."""

    @classmethod
    def branch_variant(cls, cfg) -> dict:
        return dict(GroupIAMDecoder.branch_variant(cfg), softmax=True)


def build_sparseinst_decoder(cfg, in_channels: int) -> nn.Module:
    """The decoder named by ``MODEL.SPARSE_INST.DECODER.NAME``."""
    name = cfg.MODEL.SPARSE_INST.DECODER.NAME
    return lookup(SPARSEINST_DECODER_REGISTRY, name, "MODEL.SPARSE_INST.DECODER.NAME")(
        cfg, in_channels
    )
