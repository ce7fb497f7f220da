"""Checkpoints published by AdelaiDet for BlendMask (``R_50_1x.pth``, ...).

The modules keep AdelaiDet's names (``backbone.*``, ``proposal_generator.fcos_head.*``,
``top_layer``, ``basis_module.*``), so FCOS's rules are the whole map
(:func:`instseg_d2.modeling.fcos.convert_fcos_keys`: ``centerness`` -> ``ctrness``, the name of
the published BlendMask files, and no ``pixel_mean`` / ``pixel_std``).
"""

from typing import Dict, Mapping

import torch

from instseg_d2.engine.conversion import register_reference_converter
from instseg_d2.modeling.fcos import convert_fcos_keys
from instseg_d2.modeling.fcos.checkpoint import FCOS_HEAD


def is_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is a BlendMask's: an FCOS head and a ``top_layer``."""
    return "top_layer.weight" in state_dict and any(k.startswith(FCOS_HEAD) for k in state_dict)


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """An AdelaiDet BlendMask state dict with this package's names."""
    return convert_fcos_keys(state_dict)


register_reference_converter(
    "BlendMask", "AdelaiDet BlendMask", is_reference_state_dict, convert_reference_state_dict
)
