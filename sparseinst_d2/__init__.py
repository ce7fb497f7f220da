"""SparseInst (Cheng et al., "Sparse Instance Activation for Real-Time Instance Segmentation",
CVPR 2022) on detectron2: importing this package registers the ``SparseInst``
meta-architecture and its encoder / decoder registries."""

from .checkpoint import convert_reference_state_dict, is_reference_state_dict
from .config import add_sparseinst_config
from .decoder import BaseIAMDecoder, GroupIAMDecoder
from .encoder import InstanceContextEncoder
from .registry import SPARSEINST_DECODER_REGISTRY, SPARSEINST_ENCODER_REGISTRY
from .loss import SparseInstCriterion
from .matcher import SparseInstMatcher
from .sparseinst import SparseInst

NUM_CLASSES_KEYS = ("MODEL.SPARSE_INST.DECODER.NUM_CLASSES",)

__all__ = [
    "BaseIAMDecoder",
    "GroupIAMDecoder",
    "InstanceContextEncoder",
    "NUM_CLASSES_KEYS",
    "SPARSEINST_DECODER_REGISTRY",
    "SPARSEINST_ENCODER_REGISTRY",
    "SparseInst",
    "SparseInstCriterion",
    "SparseInstMatcher",
    "add_sparseinst_config",
    "convert_reference_state_dict",
    "is_reference_state_dict",
]
