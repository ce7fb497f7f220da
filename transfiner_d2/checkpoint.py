"""Loading checkpoints of the reference implementation (SysCV/transfiner, a detectron2 v0.5
fork) into this package's model.

The reference keeps detectron2's names for the whole Mask R-CNN (backbone, RPN, box head and
``mask_head.mask_fcn*/deconv/predictor``); its method-specific parameters have other names here:

==========================================================  =========================================
reference (under ``roi_heads.``)                             here (under ``roi_heads.``)
==========================================================  =========================================
``mask_pooler.conv_norm_relus_semantic.{0,2,4,6}``           ``semantic_head.convs.{0,1,2,3}``
``mask_head.predictor_semantic_s``                           ``semantic_head.predictor``
``mask_head.mask_fcn_uncertain{k}``                          ``mask_head.incoherent_fcn{k}``
``mask_head.deconv_uncertain``                               ``mask_head.incoherent_deconv``
``mask_head.predictor_uncertain``                            ``mask_head.incoherent_predictor``
``mask_head.deconv_bo``                                      ``mask_head.boundary_deconv``
``mask_head.predictor_bo``                                   ``mask_head.boundary_predictor``
``mask_head.encoder.conv_fuse`` (1x1 conv)                   ``mask_head.refiner.transformer.input_proj`` (linear)
``mask_head.encoder.layers.{i}.*``                           ``mask_head.refiner.transformer.layers.{i}.*``
``mask_head.encoder.conv_r1.0`` / ``.2`` (1x1 convs)         ``mask_head.refiner.transformer.output_fc1`` / ``2``
==========================================================  =========================================

The converter is registered for models with :class:`~transfiner_d2.roi_heads.TransfinerROIHeads`,
so ``MODEL.WEIGHTS`` may name a reference ``.pth`` directly.
"""

import re
from typing import Dict, List, Tuple

import torch

from instseg_d2.engine.conversion import register_reference_converter

# (pattern on the key after "roi_heads.", replacement, 1x1 conv weight -> linear weight)
_RULES: List[Tuple[str, str, bool]] = [
    (r"^mask_pooler\.conv_norm_relus_semantic\.(\d+)\.",
     lambda m: f"semantic_head.convs.{int(m.group(1)) // 2}.", False),
    (r"^mask_head\.predictor_semantic_s\.", "semantic_head.predictor.", False),
    (r"^mask_head\.mask_fcn_uncertain(\d+)\.", r"mask_head.incoherent_fcn\1.", False),
    (r"^mask_head\.deconv_uncertain\.", "mask_head.incoherent_deconv.", False),
    (r"^mask_head\.predictor_uncertain\.", "mask_head.incoherent_predictor.", False),
    (r"^mask_head\.deconv_bo\.", "mask_head.boundary_deconv.", False),
    (r"^mask_head\.predictor_bo\.", "mask_head.boundary_predictor.", False),
    (r"^mask_head\.encoder\.conv_fuse\.", "mask_head.refiner.transformer.input_proj.", True),
    (r"^mask_head\.encoder\.layers\.", "mask_head.refiner.transformer.layers.", False),
    (r"^mask_head\.encoder\.conv_r1\.0\.", "mask_head.refiner.transformer.output_fc1.", True),
    (r"^mask_head\.encoder\.conv_r1\.2\.", "mask_head.refiner.transformer.output_fc2.", True),
]  # fmt: skip

# One key of every reference module that has parameters: all must be present.
_REQUIRED = (
    "mask_pooler.conv_norm_relus_semantic.0.weight",
    "mask_head.predictor_semantic_s.weight",
    "mask_head.mask_fcn_uncertain1.weight",
    "mask_head.deconv_uncertain.weight",
    "mask_head.predictor_uncertain.weight",
    "mask_head.deconv_bo.weight",
    "mask_head.predictor_bo.weight",
    "mask_head.encoder.conv_fuse.weight",
    "mask_head.encoder.layers.0.self_attn.in_proj_weight",
    "mask_head.encoder.conv_r1.0.weight",
    "mask_head.encoder.conv_r1.2.weight",
)
_MARKERS = ("mask_head.encoder.", "mask_pooler.conv_norm_relus_semantic.")


def is_reference_state_dict(
    state_dict: Dict[str, torch.Tensor], prefix: str = "roi_heads."
) -> bool:
    """Whether ``state_dict`` holds reference-named Transfiner parameters under ``prefix``."""
    markers = tuple(prefix + m for m in _MARKERS)
    return any(k.startswith(markers) for k in state_dict)


def convert_reference_state_dict(
    state_dict: Dict[str, torch.Tensor], prefix: str = "roi_heads."
) -> Dict[str, torch.Tensor]:
    """Rename (and reshape) the reference's Transfiner parameters under ``prefix``.

    Keys outside ``prefix`` and detectron2-named keys are returned unchanged.

    Raises:
        ValueError: the state dict has some reference Transfiner keys but not all of them
            (a checkpoint of another model, or a truncated one).
    """
    missing = [prefix + k for k in _REQUIRED if prefix + k not in state_dict]
    if missing:
        raise ValueError(
            "Not a complete Mask Transfiner checkpoint of the reference implementation "
            f"(SysCV/transfiner): it lacks {missing}"
        )
    out = {}
    for key, value in state_dict.items():
        new_key = key
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            for pattern, repl, squeeze in _RULES:
                if re.match(pattern, rest):
                    new_key = prefix + re.sub(pattern, repl, rest, count=1)
                    if squeeze and key.endswith(".weight"):
                        if value.dim() != 4 or value.shape[2:] != (1, 1):
                            raise ValueError(
                                f"{key}: expected a 1x1 conv weight, got shape {tuple(value.shape)}"
                            )
                        value = value[:, :, 0, 0]
                    break
        out[new_key] = value
    return out


register_reference_converter(
    "TransfinerROIHeads", "SysCV/transfiner", is_reference_state_dict, convert_reference_state_dict
)
