"""MaskLab (Chen et al., CVPR 2018) on detectron2's GeneralizedRCNN / StandardROIHeads.

Importing the package registers ``build_masklab_resnet_fpn_backbone`` (BACKBONE_REGISTRY),
``MaskLabROIHeads`` (ROI_HEADS_REGISTRY), ``MaskLabMaskHead`` (ROI_MASK_HEAD_REGISTRY) and the
converter that loads detectron2 ResNet-FPN checkpoints into its backbone.
"""

from .backbone import MaskLabResNetFPN, build_masklab_resnet_fpn_backbone
from .checkpoint import convert_reference_state_dict
from .config import add_masklab_config
from .deformable import DeformableCropAndResize
from .dense_head import MaskLabDenseHead
from .directions import crop_direction_bins, direction_bin, direction_pooling
from .mask_head import MaskLabMaskHead
from .roi_heads import MaskLabROIHeads

# MaskLab's class counts are MODEL.ROI_HEADS.NUM_CLASSES (detectron2's key, set by the platform).
NUM_CLASSES_KEYS = ()

__all__ = [
    "DeformableCropAndResize",
    "MaskLabDenseHead",
    "MaskLabMaskHead",
    "MaskLabROIHeads",
    "MaskLabResNetFPN",
    "add_masklab_config",
    "build_masklab_resnet_fpn_backbone",
    "convert_reference_state_dict",
    "crop_direction_bins",
    "direction_bin",
    "direction_pooling",
]
