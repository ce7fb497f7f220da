"""Checkpoints published by AdelaiDet for SOLOv2 (``SOLOv2_R50_3x.pth``, ...).

AdelaiDet's ``SOLOv2`` meta-architecture holds ``backbone`` (detectron2's ResNet-FPN, same
names as ours), ``ins_head`` (``SOLOv2InsHead``) and ``mask_head`` (``SOLOv2MaskHead``). The
module structure is the same here (towers are flat ``Sequential`` of (conv, GroupNorm, ReLU)
triples, mask-branch blocks ``Sequential(conv, GroupNorm, ReLU)``); only the prefixes differ:

=============================================  ==============================================
AdelaiDet                                      solo_d2 (``MODEL.SOLO.HEAD_NAME SOLOv2Head``)
=============================================  ==============================================
ins_head.cate_tower.{i}.{weight,bias}          head.cate_branch.tower.{i}.{weight,bias}
ins_head.kernel_tower.{i}.{weight,bias}        head.kernel_tower.{i}.{weight,bias}
ins_head.cate_pred.{weight,bias}               head.cate_branch.pred.{weight,bias}
ins_head.kernel_pred.{weight,bias}             head.kernel_pred.{weight,bias}
mask_head.convs_all_levels.{l}.conv{j}.{m}.*   head.mask_branch.levels.{l}.{j}.{m}.*
mask_head.conv_pred.{m}.{weight,bias}          head.mask_branch.pred.{m}.{weight,bias}
backbone.*                                     backbone.* (unchanged)
=============================================  ==============================================

The converter is registered for the ``SOLO`` meta-architecture, so ``MODEL.WEIGHTS
SOLOv2_R50_3x.pth`` works as it is (``configs/SOLO/SOLOv2_R_50_3x.yaml``), and
``tools/convert_checkpoint.py`` writes a converted copy.
"""

import re
from collections import OrderedDict
from typing import Dict

import torch

from instseg_d2.engine.conversion import register_reference_converter

_RULES = [
    (r"backbone\.(.+)", r"backbone.\1"),
    (r"ins_head\.cate_tower\.(\d+)\.(weight|bias)", r"head.cate_branch.tower.\1.\2"),
    (r"ins_head\.kernel_tower\.(\d+)\.(weight|bias)", r"head.kernel_tower.\1.\2"),
    (r"ins_head\.cate_pred\.(weight|bias)", r"head.cate_branch.pred.\1"),
    (r"ins_head\.kernel_pred\.(weight|bias)", r"head.kernel_pred.\1"),
    (r"mask_head\.convs_all_levels\.(\d+)\.conv(\d+)\.([01])\.(weight|bias)",
     r"head.mask_branch.levels.\1.\2.\3.\4"),
    (r"mask_head\.conv_pred\.([01])\.(weight|bias)", r"head.mask_branch.pred.\1.\2"),
]  # fmt: skip


class NotAdelaiDetSOLOv2Error(ValueError):
    """The state dict is not one of AdelaiDet's SOLOv2."""


def _rename(key: str):
    """solo_d2's name of an AdelaiDet SOLOv2 key, None if it fits no rule."""
    for pattern, target in _RULES:
        m = re.fullmatch(pattern, key)
        if m is not None:
            return m.expand(target)
    return None


def is_reference_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` has AdelaiDet SOLOv2's instance head (``ins_head.*``)."""
    return any(k.startswith("ins_head.") for k in state_dict)


def convert_reference_state_dict(state_dict: Dict[str, torch.Tensor]) -> "OrderedDict":
    """Rename an AdelaiDet SOLOv2 state dict to solo_d2's names.

    Raises:
        NotAdelaiDetSOLOv2Error: naming the keys that fit no rule, or when the state dict has
            none of SOLOv2's head keys (e.g. a checkpoint of another model).
    """
    if not is_reference_state_dict(state_dict):
        raise NotAdelaiDetSOLOv2Error(
            "Not an AdelaiDet SOLOv2 checkpoint: no 'ins_head.*' keys "
            f"(it holds e.g. {list(state_dict)[:3]})"
        )
    out, unknown = OrderedDict(), []
    for key, value in state_dict.items():
        new = _rename(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise NotAdelaiDetSOLOv2Error(
            f"{len(unknown)} key(s) of the checkpoint fit no AdelaiDet SOLOv2 name, e.g. "
            f"{unknown[:5]}"
        )
    return out


register_reference_converter(
    "SOLO", "AdelaiDet SOLOv2", is_reference_state_dict, convert_reference_state_dict
)
