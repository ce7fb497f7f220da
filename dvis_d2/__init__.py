"""DVIS: Deep Variational Instance Segmentation (Yuan, Chen, Li, NeurIPS 2020) on detectron2."""

from .config import add_dvis_config
from .discretization import Candidates, Discretizer
from .dvis import DVIS  # registers META_ARCH "DVIS"
from .label_head import LabelHead
from .verification import VerificationHead

NUM_CLASSES_KEYS = ("MODEL.DVIS.NUM_CLASSES",)

__all__ = [
    "DVIS",
    "Candidates",
    "Discretizer",
    "LabelHead",
    "NUM_CLASSES_KEYS",
    "VerificationHead",
    "add_dvis_config",
]
