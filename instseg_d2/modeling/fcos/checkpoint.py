"""Checkpoints published by AdelaiDet for FCOS (``FCOS_R_50_1x.pth``, ...).

AdelaiDet's ``OneStageDetector`` holds ``backbone.*`` (detectron2's ResNet + an FPN on res3-res5
with ``top_block.p6/p7``) and ``proposal_generator.fcos_head.*``: the names here are the same,
except

* ``centerness`` -> ``ctrness`` (AdelaiDet's name before mid-2020, see its
  ``tools/rename_blendmask.py``);
* ``pixel_mean`` / ``pixel_std`` (saved by detectron2 before it made them non-persistent) are
  dropped: the model takes them from its config.

The same rules apply to the FCOS part of AdelaiDet's CondInst and BlendMask checkpoints
(:func:`convert_fcos_keys`, used by their packages). Registered for every model with an
:class:`~instseg_d2.modeling.fcos.FCOS` module (``OneStageDetector``, CondInst, BlendMask), so an
FCOS checkpoint may also initialise their detector.
"""

from typing import Dict, Mapping

import torch

from ...engine.conversion import register_reference_converter

FCOS_HEAD = "proposal_generator.fcos_head."
DERIVED_BUFFERS = ("pixel_mean", "pixel_std")
_RENAMES = (("centerness", "ctrness"),)


def convert_fcos_keys(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename AdelaiDet's FCOS keys and drop the buffers derived from the config; every other
    key is kept as it is."""
    out = {}
    for k, v in state_dict.items():
        if k in DERIVED_BUFFERS:
            continue
        if k.startswith(FCOS_HEAD):
            for old, new in _RENAMES:
                k = k.replace(old, new)
        out[k] = v
    return out


def is_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is an FCOS detector's: an ``fcos_head``, and nothing but the
    backbone, the proposal generator and derived buffers (no mask branch of another model)."""
    return any(k.startswith(FCOS_HEAD) for k in state_dict) and all(
        k.startswith(("backbone.", "proposal_generator.")) or k in DERIVED_BUFFERS
        for k in state_dict
    )


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """An AdelaiDet FCOS state dict with this project's names."""
    return convert_fcos_keys(state_dict)


register_reference_converter(
    "FCOS", "AdelaiDet FCOS", is_reference_state_dict, convert_reference_state_dict
)
