"""Shared platform for instance segmentation methods on Detectron2.

It holds what several methods use: the config keys of the platform, the data (the embedded
"shapes" dataset, COCO-json registration, the one dataset mapper), the one trainer, the
checkpointer, shared layers (dice loss, aligned bilinear, centre of mass, ...), FCOS and the
benchmark. Method packages (``condinst_d2``, ``solo_d2``, ...) plug into it through
:mod:`instseg_d2.plugins`.
"""

from ._prerequisites import check_detectron2

check_detectron2()

from .config import add_instseg_config  # noqa: E402

__all__ = ["add_instseg_config"]
__version__ = "0.1.0"
