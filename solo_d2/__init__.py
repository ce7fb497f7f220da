"""SOLO, Decoupled SOLO and SOLOv2 on Detectron2 (meta-architecture ``SOLO``).

Importing the package registers the ``SOLO`` meta-architecture, the heads ``SOLOHead``,
``DecoupledSOLOHead`` and ``SOLOv2Head`` (``MODEL.SOLO.HEAD_NAME``) and the converter of
AdelaiDet's SOLOv2 checkpoints.
"""

from .config import add_solo_config
from .checkpoint import convert_reference_state_dict
from .heads import SOLO_HEAD_REGISTRY, DecoupledSOLOHead, SOLOHead, SOLOv2Head, build_solo_head
from .meta_arch import SOLO

# Every config key holding a class count; the platform sets them from the training set.
NUM_CLASSES_KEYS = ("MODEL.SOLO.NUM_CLASSES",)

__all__ = [
    "NUM_CLASSES_KEYS",
    "SOLO",
    "SOLO_HEAD_REGISTRY",
    "DecoupledSOLOHead",
    "SOLOHead",
    "SOLOv2Head",
    "add_solo_config",
    "build_solo_head",
    "convert_reference_state_dict",
]
