"""CondInst (Tian, Shen, Chen, ECCV 2020) on the shared FCOS. Importing registers the
``CondInst`` meta-architecture and the converter of AdelaiDet's CondInst checkpoints."""

from .checkpoint import convert_reference_state_dict
from .condinst import CondInst
from .config import add_condinst_config
from .dynamic_head import DynamicMaskHead, dynamic_param_counts
from .mask_branch import MaskBranch, semantic_targets

# The semantic head's class count is MODEL.FCOS.NUM_CLASSES (listed by instseg_d2.modeling).
NUM_CLASSES_KEYS = ()

__all__ = [
    "CondInst",
    "DynamicMaskHead",
    "MaskBranch",
    "NUM_CLASSES_KEYS",
    "add_condinst_config",
    "convert_reference_state_dict",
    "dynamic_param_counts",
    "semantic_targets",
]
