"""Load AdelaiDet's SOLOv2 checkpoints (e.g. the published ``SOLOv2_R50_3x.pth``).

AdelaiDet's ``SOLOv2`` meta-architecture holds ``backbone`` (detectron2's ResNet-FPN, same
names as ours), ``ins_head`` (``SOLOv2InsHead``) and ``mask_head`` (``SOLOv2MaskHead``). Its
towers are ``nn.Sequential`` of (conv, GroupNorm, ReLU) triples, ours of detectron2 ``Conv2d``
with a ``norm`` child. Key map (k = block index):

=================================================  ==========================================
AdelaiDet                                          solo_d2 (``MODEL.SOLO.HEAD_NAME SOLOv2Head``)
=================================================  ==========================================
ins_head.cate_tower.{3k}.weight                    head.cate_branch.tower.{k}.weight
ins_head.cate_tower.{3k+1}.{weight,bias}           head.cate_branch.tower.{k}.norm.{weight,bias}
ins_head.kernel_tower.{3k}.weight                  head.kernel_tower.{k}.weight
ins_head.kernel_tower.{3k+1}.{weight,bias}         head.kernel_tower.{k}.norm.{weight,bias}
ins_head.cate_pred.{weight,bias}                   head.cate_branch.pred.{weight,bias}
ins_head.kernel_pred.{weight,bias}                 head.kernel_pred.{weight,bias}
mask_head.convs_all_levels.{l}.conv{j}.0.weight    head.mask_branch.levels.{l}.{j}.weight
mask_head.convs_all_levels.{l}.conv{j}.1.{w,b}     head.mask_branch.levels.{l}.{j}.norm.{w,b}
mask_head.conv_pred.0.weight                       head.mask_branch.pred.weight
mask_head.conv_pred.1.{weight,bias}                head.mask_branch.pred.norm.{weight,bias}
backbone.*                                         backbone.* (unchanged)
=================================================  ==========================================

The :class:`~solo_d2.SOLO` model renames such a state dict when it is loaded, so
``MODEL.WEIGHTS SOLOv2_R50_3x.pth`` works as it is (``configs/SOLO/SOLOv2_R50_3x.yaml``);
``python tools/solo_convert_adelaidet.py SOLOv2_R50_3x.pth out.pth`` writes a converted copy.
"""

import re
from collections import OrderedDict
from typing import Dict

import torch

_RULES = [
    (r"backbone\.(.+)", r"backbone.\1"),
    (r"ins_head\.cate_tower\.(\d+)\.(weight|bias)", "head.cate_branch.tower.{k}{n}.{p}"),
    (r"ins_head\.kernel_tower\.(\d+)\.(weight|bias)", "head.kernel_tower.{k}{n}.{p}"),
    (r"ins_head\.cate_pred\.(weight|bias)", r"head.cate_branch.pred.\1"),
    (r"ins_head\.kernel_pred\.(weight|bias)", r"head.kernel_pred.\1"),
    (r"mask_head\.convs_all_levels\.(\d+)\.conv(\d+)\.0\.(weight|bias)",
     r"head.mask_branch.levels.\1.\2.\3"),
    (r"mask_head\.convs_all_levels\.(\d+)\.conv(\d+)\.1\.(weight|bias)",
     r"head.mask_branch.levels.\1.\2.norm.\3"),
    (r"mask_head\.conv_pred\.0\.(weight|bias)", r"head.mask_branch.pred.\1"),
    (r"mask_head\.conv_pred\.1\.(weight|bias)", r"head.mask_branch.pred.norm.\1"),
]  # fmt: skip


class NotAdelaiDetSOLOv2Error(ValueError):
    """The state dict is not one of AdelaiDet's SOLOv2."""


def _rename(key: str):
    for pattern, target in _RULES:
        m = re.fullmatch(pattern, key)
        if m is None:
            continue
        if "{k}" not in target:
            return m.expand(target)
        idx, param = int(m.group(1)), m.group(2)
        block, pos = divmod(idx, 3)  # (conv, GroupNorm, ReLU) triples
        if pos == 2:
            return None
        return target.format(k=block, n="" if pos == 0 else ".norm", p=param)
    return None


def is_adelaidet_solov2(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` has AdelaiDet SOLOv2's head names."""
    return any(k.startswith(("ins_head.", "mask_head.")) for k in state_dict)


def convert_adelaidet_solov2(state_dict: Dict[str, torch.Tensor]) -> "OrderedDict":
    """Rename an AdelaiDet SOLOv2 state dict (``model`` of its checkpoint) to solo_d2's names.

    Raises:
        NotAdelaiDetSOLOv2Error: naming the keys that fit no rule, or when the state dict has
            none of SOLOv2's head keys (e.g. a checkpoint of another model).
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    if not is_adelaidet_solov2(state_dict):
        raise NotAdelaiDetSOLOv2Error(
            "Not an AdelaiDet SOLOv2 checkpoint: no 'ins_head.*' / 'mask_head.*' keys "
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


def load_adelaidet_solov2(path: str) -> "OrderedDict":
    """Read an AdelaiDet SOLOv2 ``.pth`` file (tensors only) and convert it."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return convert_adelaidet_solov2(ckpt)
