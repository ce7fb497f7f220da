"""SOLO heads, one per variant, selected by ``MODEL.SOLO.HEAD_NAME`` (local registry)."""

from .base import SOLO_HEAD_REGISTRY, build_solo_head, rescale_instance_levels
from .solo import DecoupledSOLOHead, SOLOHead
from .solov2 import MaskFeatureBranch, SOLOv2Head

__all__ = [
    "SOLO_HEAD_REGISTRY",
    "DecoupledSOLOHead",
    "MaskFeatureBranch",
    "SOLOHead",
    "SOLOv2Head",
    "build_solo_head",
    "rescale_instance_levels",
]
