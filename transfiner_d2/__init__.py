"""Mask Transfiner (Ke et al., "Mask Transfiner for High-Quality Instance Segmentation",
CVPR 2022) as a plugin on stock detectron2: a registered RoI mask head (``TransfinerMaskHead``)
and RoI heads (``TransfinerROIHeads``) on top of Mask R-CNN's ``GeneralizedRCNN``.
"""

from . import mask_head as _mask_head  # noqa: F401  (registers TransfinerMaskHead)
from . import roi_heads as _roi_heads  # noqa: F401  (registers TransfinerROIHeads)
from .checkpoint import convert_reference_state_dict
from .config import add_transfiner_config
from .mask_head import TransfinerFeatures, TransfinerMaskHead
from .roi_heads import TransfinerROIHeads

# The class count lives in detectron2's MODEL.ROI_HEADS.NUM_CLASSES: no key of our own.
NUM_CLASSES_KEYS = ()

__all__ = [
    "NUM_CLASSES_KEYS",
    "TransfinerFeatures",
    "TransfinerMaskHead",
    "TransfinerROIHeads",
    "add_transfiner_config",
    "convert_reference_state_dict",
]
