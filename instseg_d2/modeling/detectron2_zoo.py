"""Checkpoints of detectron2's model zoo for its ``GeneralizedRCNN`` (Mask R-CNN, ...).

detectron2's names are this project's names for every model built on ``GeneralizedRCNN`` (the
Mask R-CNN baseline, and the detector of Mask Transfiner, MaskLab and semi-convolutional
Mask R-CNN). Files saved before detectron2 made some buffers non-persistent also hold
``pixel_mean`` / ``pixel_std`` (taken from the config here) and the anchor generator's
``cell_anchors`` (derived from the config): they are dropped.
"""

from typing import Dict, Mapping

import torch

from ..engine.conversion import register_reference_converter

DERIVED_BUFFERS = ("pixel_mean", "pixel_std")
CELL_ANCHORS = "proposal_generator.anchor_generator.cell_anchors."


def is_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is a two-stage detector's: an RPN head and RoI heads."""
    keys = list(state_dict)
    return any(k.startswith("proposal_generator.rpn_head.") for k in keys) and any(
        k.startswith("roi_heads.") for k in keys
    )


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The state dict without the buffers that the model derives from its config."""
    return {
        k: v
        for k, v in state_dict.items()
        if k not in DERIVED_BUFFERS and not k.startswith(CELL_ANCHORS)
    }


register_reference_converter(
    "GeneralizedRCNN", "detectron2 GeneralizedRCNN", is_reference_state_dict,
    convert_reference_state_dict,
)  # fmt: skip
