"""detectron2 ResNet-FPN checkpoints (e.g. of its Mask R-CNN) for MaskLab's backbone.

MaskLab has no reference implementation; its detector is detectron2's Mask R-CNN, whose
checkpoints initialise it. :class:`~masklab_d2.backbone.MaskLabResNetFPN` runs detectron2's
ResNet and FPN modules unchanged but holds the FPN as a child: detectron2's top-level
``backbone.fpn_lateral{l}.*`` / ``backbone.fpn_output{l}.*`` are ``backbone.fpn.fpn_*`` here.
The converter is registered for models with a ``MaskLabResNetFPN``.
"""

import re
from typing import Dict, Mapping

import torch

from instseg_d2.engine.conversion import register_reference_converter

_TOP_LEVEL_FPN = re.compile(r"^backbone\.(fpn_(lateral|output)\d+\..+)$")


def is_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` has detectron2's top-level FPN names."""
    return any(_TOP_LEVEL_FPN.match(k) for k in state_dict)


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """detectron2's FPN keys moved under ``backbone.fpn.``; every other key unchanged."""
    return {_TOP_LEVEL_FPN.sub(r"backbone.fpn.\1", k): v for k, v in state_dict.items()}


# detectron2's FPN names are those of many models: recognising them does not identify a model
register_reference_converter(
    "MaskLabResNetFPN", "detectron2 ResNet-FPN", is_reference_state_dict,
    convert_reference_state_dict, identifies_model=False,
)  # fmt: skip
