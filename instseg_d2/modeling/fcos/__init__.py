"""FCOS: head, target assignment, losses, inference, the registered proposal generator and the
converter of AdelaiDet's FCOS checkpoints."""

from .checkpoint import convert_fcos_keys
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
    "convert_fcos_keys",
    "ctrness_targets",
    "fcos_targets",
    "ltrb_iou",
    "predict_instances",
    "size_ranges",
]
