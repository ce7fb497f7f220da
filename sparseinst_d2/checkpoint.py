"""Loading checkpoints of the reference implementation (hustvl/SparseInst).

The reference's published models are detectron2 checkpoints of its ``SparseInst`` module. The
backbone (detectron2's ResNet) has the same names here; the encoder and decoder differ:

=================================================  ==========================================
reference                                          this package
=================================================  ==========================================
``encoder.fpn_laterals.{j}`` (j=0: C5, coarsest)    ``encoder.lateral_convs.{L-1-j}`` (0: C3)
``encoder.fpn_outputs.{j}``                         ``encoder.output_convs.{L-1-j}``
``encoder.ppm.stages.{j}.1`` (pool, conv)           ``encoder.ppm.convs.{j}``
``decoder.{inst,mask}_branch.{inst,mask}_convs.{2k}``  ``decoder.{inst,mask}_branch.convs.{k}``
=================================================  ==========================================

(the reference's conv stacks interleave ``nn.ReLU`` modules; here each conv carries its ReLU).
Everything else (``encoder.ppm.bottleneck``, ``encoder.fusion``, ``decoder.inst_branch.{iam_conv,
fc, cls_score, mask_kernel, objectness, softmax_bias}``, ``decoder.mask_branch.projection``)
keeps its name. The converter is registered for the ``SparseInst`` meta-architecture, so the
published ``.pth`` files work as they are in ``MODEL.WEIGHTS``.
"""

import re
from typing import Dict

import torch

from instseg_d2.engine.conversion import register_reference_converter

# Patterns that only the reference's names have.
_REFERENCE_ONLY = re.compile(
    r"^(encoder\.fpn_(laterals|outputs)\.|encoder\.ppm\.stages\.|"
    r"decoder\.inst_branch\.inst_convs\.|decoder\.mask_branch\.mask_convs\.)"
)
# Names that are the same in both.
_SAME = re.compile(
    r"^(backbone\..+|encoder\.(ppm\.bottleneck|fusion)\.(weight|bias)|"
    r"decoder\.inst_branch\.(iam_conv|fc|cls_score|mask_kernel|objectness)\.(weight|bias)|"
    r"decoder\.inst_branch\.softmax_bias|decoder\.mask_branch\.projection\.(weight|bias))$"
)


def is_reference_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` has the reference implementation's names."""
    return any(_REFERENCE_ONLY.match(k) for k in state_dict)


def convert_reference_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a reference SparseInst state dict to this package's names (tensors unchanged).

    Raises:
        ValueError: naming the keys that belong to no SparseInst model of the reference, or
            saying which part is missing (a checkpoint of another model).
    """
    levels = {
        int(m.group(1))
        for k in state_dict
        for m in [re.match(r"^encoder\.fpn_laterals\.(\d+)\.", k)]
        if m
    }
    num_levels = max(levels) + 1 if levels else 0
    rules = [
        (r"^encoder\.fpn_laterals\.(\d+)\.", lambda m: f"encoder.lateral_convs.{num_levels - 1 - int(m.group(1))}."),
        (r"^encoder\.fpn_outputs\.(\d+)\.", lambda m: f"encoder.output_convs.{num_levels - 1 - int(m.group(1))}."),
        (r"^encoder\.ppm\.stages\.(\d+)\.1\.", lambda m: f"encoder.ppm.convs.{m.group(1)}."),
        (r"^decoder\.inst_branch\.inst_convs\.(\d+)\.", lambda m: _conv_index("decoder.inst_branch", m)),
        (r"^decoder\.mask_branch\.mask_convs\.(\d+)\.", lambda m: _conv_index("decoder.mask_branch", m)),
    ]  # fmt: skip
    out, unknown = {}, []
    for key, value in state_dict.items():
        new = key
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        else:
            if not _SAME.match(key):
                unknown.append(key)
        out[new] = value
    if unknown:
        raise ValueError(
            f"Not a checkpoint of the reference SparseInst: {len(unknown)} key(s) belong to "
            f"none of its modules, e.g. {unknown[:5]}"
        )
    for part in ("backbone.", "encoder.", "decoder.inst_branch.", "decoder.mask_branch."):
        if not any(k.startswith(part) for k in out):
            raise ValueError(f"Not a checkpoint of the reference SparseInst: it has no '{part}*'")
    return out


def _conv_index(prefix: str, m: "re.Match") -> str:
    i = int(m.group(1))
    if i % 2:
        raise ValueError(f"{m.group(0)}: odd indices are ReLUs in the reference, not convs")
    return f"{prefix}.convs.{i // 2}."


register_reference_converter(
    "SparseInst", "hustvl/SparseInst", is_reference_state_dict, convert_reference_state_dict
)
