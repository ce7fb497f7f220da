"""BlendMask (Chen et al., CVPR 2020) on the shared FCOS. Importing registers the ``BlendMask``
meta-architecture and the converter of AdelaiDet's BlendMask checkpoints."""

from .basis_module import ProtoNet, thing_semantic_targets
from .blender import Blender, blend
from .blendmask import BlendMask
from .checkpoint import convert_reference_state_dict
from .config import add_blendmask_config

NUM_CLASSES_KEYS = ("MODEL.BASIS_MODULE.NUM_CLASSES",)

__all__ = [
    "BlendMask",
    "Blender",
    "NUM_CLASSES_KEYS",
    "ProtoNet",
    "add_blendmask_config",
    "blend",
    "convert_reference_state_dict",
    "thing_semantic_targets",
]
