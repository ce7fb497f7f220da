"""Building blocks shared by several methods. Each is written once, here."""

from .conv import conv_norm_relu
from .coords import compute_locations, coordinate_features
from .grad import scale_gradient
from .losses import dice_coefficient, dice_loss
from .masks import boxes_from_masks, center_of_mass
from .matrix_nms import mask_iou_matrix, matrix_nms, point_nms
from .split import split_per_image
from .upsample import aligned_bilinear, resize_maps

__all__ = [
    "aligned_bilinear",
    "boxes_from_masks",
    "center_of_mass",
    "compute_locations",
    "conv_norm_relu",
    "coordinate_features",
    "dice_coefficient",
    "dice_loss",
    "mask_iou_matrix",
    "matrix_nms",
    "point_nms",
    "resize_maps",
    "scale_gradient",
    "split_per_image",
]
