"""Semi-convolutional Mask R-CNN (Novotny, Albanie, Larlus, Vedaldi, ECCV 2018) on detectron2.

Registers ``SemiConvROIHeads`` (ROI_HEADS) and ``SemiConvMaskHead`` (ROI_MASK_HEAD) for
detectron2's GeneralizedRCNN; see projects/SemiConv/README.md.
"""

from .config import add_semiconv_config
from .embedding import SemiConvEmbeddingHead, add_pixel_coordinates, pixel_coordinates
from .kernel import fuse_scores, hard_seed, log_steered_bilateral_kernel, soft_seed
from .losses import embedding_loss, instance_embedding_loss, kernel_bce_loss
from .mask_head import SemiConvMaskHead
from .roi_heads import SemiConvROIHeads

# No class-count key of its own: the heads are Mask R-CNN's (MODEL.ROI_HEADS.NUM_CLASSES).
NUM_CLASSES_KEYS = ()

__all__ = [
    "NUM_CLASSES_KEYS",
    "SemiConvEmbeddingHead",
    "SemiConvMaskHead",
    "SemiConvROIHeads",
    "add_pixel_coordinates",
    "add_semiconv_config",
    "embedding_loss",
    "fuse_scores",
    "hard_seed",
    "instance_embedding_loss",
    "kernel_bce_loss",
    "log_steered_bilateral_kernel",
    "pixel_coordinates",
    "soft_seed",
]
