"""FCOS: head, target assignment, losses, inference, and the registered proposal generator."""

from .fcos import FCOS
from .head import FCOSHead, Scale
from .inference import predict_instances
from .losses import ctrness_targets, ltrb_iou
from .targets import assign_image, fcos_targets, size_ranges

__all__ = [
    "FCOS",
    "FCOSHead",
    "Scale",
    "assign_image",
    "ctrness_targets",
    "fcos_targets",
    "ltrb_iou",
    "predict_instances",
    "size_ranges",
]
