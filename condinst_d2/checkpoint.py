"""Checkpoints published by AdelaiDet for CondInst (``CondInst_MS_R_50_1x.pth``, ...).

The modules keep AdelaiDet's names (``backbone.*``, ``proposal_generator.fcos_head.*``,
``controller``, ``mask_branch.*``), so the map is short: FCOS's rules
(:func:`instseg_d2.modeling.fcos.convert_fcos_keys`: ``centerness`` -> ``ctrness``, no
``pixel_mean`` / ``pixel_std``), and the dynamic mask head's buffers are dropped:
``mask_head.sizes_of_interest`` (derived from the config here) and ``mask_head._iter``
(BoxInst's warm-up counter).
"""

from typing import Dict, Mapping

import torch

from instseg_d2.engine.conversion import register_reference_converter
from instseg_d2.modeling.fcos import convert_fcos_keys
from instseg_d2.modeling.fcos.checkpoint import FCOS_HEAD

DERIVED_BUFFERS = ("mask_head.sizes_of_interest", "mask_head._iter")


def is_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is a CondInst's: an FCOS head and a ``controller``."""
    return "controller.weight" in state_dict and any(k.startswith(FCOS_HEAD) for k in state_dict)


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """An AdelaiDet CondInst state dict with this package's names."""
    return {k: v for k, v in convert_fcos_keys(state_dict).items() if k not in DERIVED_BUFFERS}


register_reference_converter(
    "CondInst", "AdelaiDet CondInst", is_reference_state_dict, convert_reference_state_dict
)
