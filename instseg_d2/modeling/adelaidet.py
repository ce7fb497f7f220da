"""Load checkpoints published by AdelaiDet (FCOS, CondInst, BlendMask) into these models.

The modules keep AdelaiDet's parameter names (``backbone.*``, ``proposal_generator.fcos_head.*``,
``controller``, ``mask_branch``, ``top_layer``, ``basis_module``), so the key map is short:

* ``module.`` prefixes (DistributedDataParallel saves) are removed;
* ``centerness`` -> ``ctrness`` (AdelaiDet's name before mid-2020, see its
  ``tools/rename_blendmask.py``);
* buffers that the model derives from its config are dropped: ``pixel_mean`` / ``pixel_std``
  (saved by detectron2 before it made them non-persistent) and CondInst's
  ``mask_head.sizes_of_interest`` / ``mask_head._iter`` (the latter is BoxInst's warm-up counter).
"""

from collections import OrderedDict
from typing import Dict, Mapping

import torch

KINDS = ("OneStageDetector", "CondInst", "BlendMask")  # FCOS, CondInst, BlendMask
DERIVED_BUFFERS = (
    "pixel_mean",
    "pixel_std",
    "mask_head.sizes_of_interest",
    "mask_head._iter",
)
_RENAMES = (("centerness", "ctrness"),)


class NotAnAdelaiDetCheckpoint(ValueError):
    """The state dict is not a checkpoint of the requested AdelaiDet model."""


def checkpoint_kind(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which meta-architecture an AdelaiDet (or converted) state dict belongs to."""
    keys = {k[len("module.") :] if k.startswith("module.") else k for k in state_dict}
    if not any(k.startswith("proposal_generator.fcos_head.") for k in keys):
        raise NotAnAdelaiDetCheckpoint(
            "not an AdelaiDet FCOS/CondInst/BlendMask checkpoint: no "
            f"'proposal_generator.fcos_head.*' parameter (it holds e.g. {sorted(keys)[:3]})"
        )
    if "controller.weight" in keys:
        return "CondInst"
    if "top_layer.weight" in keys:
        return "BlendMask"
    return "OneStageDetector"


def convert_adelaidet_state_dict(
    state_dict: Mapping[str, torch.Tensor], meta_architecture: str
) -> Dict[str, torch.Tensor]:
    """Map an AdelaiDet state dict to this project's names for ``meta_architecture``.

    Raises :class:`NotAnAdelaiDetCheckpoint` when the checkpoint holds another model (e.g. a
    BlendMask checkpoint for CondInst), naming both.
    """
    if meta_architecture not in KINDS:
        raise ValueError(f"meta_architecture must be one of {KINDS}, got {meta_architecture!r}")
    kind = checkpoint_kind(state_dict)
    if kind != meta_architecture:
        raise NotAnAdelaiDetCheckpoint(
            f"the checkpoint is a {kind} model (see its keys), not {meta_architecture}"
        )
    out = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[len("module.") :]
        if k in DERIVED_BUFFERS:
            continue
        for old, new in _RENAMES:
            k = k.replace(old, new)
        out[k] = v
    return out
