"""Models shared by several methods (FCOS, its P3-P7 backbone, a one-stage detector).

Importing registers ``FCOS`` (PROPOSAL_GENERATOR_REGISTRY), ``build_fcos_resnet_fpn_backbone``
(BACKBONE_REGISTRY) and ``OneStageDetector`` (META_ARCH_REGISTRY), and the converters of the
checkpoints of AdelaiDet's FCOS and of detectron2's model zoo (``GeneralizedRCNN``).
"""

from detectron2.config import CfgNode

from . import detectron2_zoo as _detectron2_zoo  # noqa: F401  (registers its converter)
from .backbone import LastLevelP6, build_fcos_resnet_fpn_backbone
from .config import add_fcos_config
from .fcos import FCOS, FCOSHead
from .one_stage import OneStageDetector


def add_modeling_config(cfg: CfgNode) -> None:
    """Add the keys of the shared models (``MODEL.FCOS.*``) to ``cfg``."""
    add_fcos_config(cfg)


NUM_CLASSES_KEYS = ("MODEL.FCOS.NUM_CLASSES",)

__all__ = [
    "FCOS",
    "FCOSHead",
    "LastLevelP6",
    "NUM_CLASSES_KEYS",
    "OneStageDetector",
    "add_modeling_config",
    "build_fcos_resnet_fpn_backbone",
]
