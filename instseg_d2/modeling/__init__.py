"""Models shared by several methods (FCOS, backbones). Importing registers them."""

from detectron2.config import CfgNode


def add_modeling_config(cfg: CfgNode) -> None:
    """Add the keys of the shared models (FCOS, ...) to ``cfg``."""


NUM_CLASSES_KEYS = ()
