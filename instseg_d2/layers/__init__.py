"""Building blocks shared by several methods. Each is written once, here."""

from .conv import conv_norm_relu
from .coords import compute_locations, coordinate_features
from .grad import scale_gradient
from .losses import dice_coefficient, dice_loss
from .gt_masks import instance_bitmasks, sample_at_stride
from .masks import boxes_from_masks, center_of_mass, mask_iou_matrix
from .matrix_nms import matrix_nms, point_nms
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
    "instance_bitmasks",
    "mask_iou_matrix",
    "matrix_nms",
    "point_nms",
    "resize_maps",
    "sample_at_stride",
    "scale_gradient",
    "split_per_image",
]
