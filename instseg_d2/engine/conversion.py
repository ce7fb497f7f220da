"""Checkpoints of the reference implementations, recognised and converted when they are loaded.

A package whose method has a published reference checkpoint owns the key map next to its model
(``<package>/checkpoint.py``: ``is_reference_state_dict(state_dict) -> bool`` and
``convert_reference_state_dict(state_dict) -> state_dict``) and registers both here when it is
imported, under the class name of the module they are for: a meta-architecture (``CondInst``,
``SOLO``, ``SparseInst``, ``GeneralizedRCNN``) or a part that a model is built with
(``FCOS``, ``TransfinerROIHeads``, ``MaskLabResNetFPN``). :class:`InstSegCheckpointer` applies,
to a checkpoint that is not in this project's format, every converter of the model's modules
that recognises it (:func:`convert_reference_checkpoint`), so ``MODEL.WEIGHTS`` may name a
published file as it is; ``tools/convert_checkpoint.py`` writes the converted copy.

A converter returns the checkpoint's tensors (or views of them) under this project's names;
those it leaves out are reported as dropped.
"""

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

logger = logging.getLogger(__name__)

StateDict = Dict[str, torch.Tensor]
DDP_PREFIX = "module."


class ReferenceMismatchError(ValueError):
    """The checkpoint is a reference checkpoint of another model than the one loading it."""


@dataclass(frozen=True)
class ReferenceConverter:
    """How to recognise and convert the checkpoints of one reference model.

    Attributes:
        part: class name of the module (meta-architecture or part) the checkpoint is for.
        source: what such a checkpoint is, for messages, e.g. ``"AdelaiDet CondInst"``.
        recognises: whether a state dict (``module.`` prefix removed) is in this format.
        convert: the state dict with this project's names.
        identifies_model: whether a checkpoint it recognises is certainly of a ``part`` model,
            so that loading it into another model is refused. False for a converter that
            adapts a part many models share (e.g. detectron2's FPN for MaskLab's backbone).
    """

    part: str
    source: str
    recognises: Callable[[Mapping[str, torch.Tensor]], bool]
    convert: Callable[[StateDict], StateDict]
    identifies_model: bool = True


_CONVERTERS: List[ReferenceConverter] = []


def register_reference_converter(
    part: str,
    source: str,
    recognises: Callable[[Mapping[str, torch.Tensor]], bool],
    convert: Callable[[StateDict], StateDict],
    identifies_model: bool = True,
) -> None:
    """Register the converter of ``source`` checkpoints for models containing a ``part``
    module (see :class:`ReferenceConverter`). Registering the same (part, source) again
    replaces it (a re-imported module)."""
    new = ReferenceConverter(part, source, recognises, convert, identifies_model)
    for i, c in enumerate(_CONVERTERS):
        if (c.part, c.source) == (part, source):
            _CONVERTERS[i] = new
            return
    _CONVERTERS.append(new)


def reference_converters() -> List[ReferenceConverter]:
    """Every registered converter, in registration order."""
    return list(_CONVERTERS)


def model_parts(model: nn.Module) -> List[str]:
    """Class names of the modules of ``model`` (itself first, then its children depth first),
    each once: what converters apply to, in the order they are applied."""
    return list(dict.fromkeys(type(m).__name__ for m in model.modules()))


@dataclass
class ConversionReport:
    """What :func:`convert_reference_checkpoint` recognised and did."""

    sources: List[str]
    renamed: int = 0
    dropped: List[str] = field(default_factory=list)
    stripped_prefix: bool = False

    @property
    def changed(self) -> bool:
        """Whether the converters changed anything (a model's own keys pass unchanged)."""
        return bool(self.renamed or self.dropped or self.stripped_prefix)

    def __str__(self) -> str:
        done = [f"renamed {self.renamed} key{'s' if self.renamed != 1 else ''}"]
        if self.dropped:
            done.append(f"dropped {', '.join(self.dropped)}")
        if self.stripped_prefix:
            done.append(f"removed the '{DDP_PREFIX}' prefix")
        return f"recognised a checkpoint of {' + '.join(self.sources)}; {', '.join(done)}"


def strip_ddp_prefix(state_dict: Mapping[str, torch.Tensor]) -> Tuple[StateDict, bool]:
    """``state_dict`` without the ``module.`` prefix of a DistributedDataParallel save (only
    when every key has it), and whether it had it."""
    if state_dict and all(k.startswith(DDP_PREFIX) for k in state_dict):
        return {k[len(DDP_PREFIX) :]: v for k, v in state_dict.items()}, True
    return dict(state_dict), False


def convert_reference_checkpoint(
    state_dict: Mapping[str, torch.Tensor], parts: Sequence[str], refuse_other_models: bool = True
) -> Tuple[StateDict, Optional[ConversionReport]]:
    """Convert a reference checkpoint for a model made of ``parts`` (see :func:`model_parts`).

    Every registered converter of one of ``parts`` that recognises the state dict is applied,
    in the order of ``parts`` (e.g. detectron2's ``GeneralizedRCNN`` before the RoI heads of a
    method built on it). When none does, the state dict is returned as it is, with report
    None. The converters leave a state dict with the model's own names unchanged.

    Raises:
        ReferenceMismatchError: with ``refuse_other_models``, when no converter of ``parts``
            recognises it but the converter of another model does (e.g. a BlendMask checkpoint
            loaded into CondInst).
        ValueError: from a converter, for a checkpoint it cannot convert (e.g. truncated).
    """
    state, stripped = strip_ddp_prefix(state_dict)
    mine = [c for p in parts for c in _CONVERTERS if c.part == p and c.recognises(state)]
    if not mine:
        others = refuse_other_models and [
            c
            for c in _CONVERTERS
            if c.identifies_model and c.part not in parts and c.recognises(state)
        ]
        if others:
            known = sorted({c.part for c in _CONVERTERS} & set(parts)) or ["none"]
            raise ReferenceMismatchError(
                f"it is a checkpoint of {others[0].source} (for a {others[0].part} model), and "
                f"the model has no {others[0].part} (its parts with a reference format: "
                f"{', '.join(known)})"
            )
        return dict(state_dict), None
    out = state
    for c in mine:
        out = c.convert(out)
    renamed, dropped = _renamed_and_dropped(state, out)
    report = ConversionReport([c.source for c in mine], renamed, dropped, stripped)
    return out, report


def _identity(t) -> int:
    """Tensors (and their views) of one storage have one identity."""
    if isinstance(t, torch.Tensor) and t.numel() > 0:
        return t.untyped_storage().data_ptr()
    return id(t)


def _renamed_and_dropped(before: StateDict, after: StateDict) -> Tuple[int, List[str]]:
    """How many keys of ``after`` hold a tensor of ``before`` under another name, and the keys
    of ``before`` whose tensor is in ``after`` under no name."""
    origin: Dict[int, str] = {}
    for k, v in before.items():
        origin.setdefault(_identity(v), k)
    used, renamed = set(), 0
    for k, v in after.items():
        src = origin.get(_identity(v))
        if src is None:
            src = k if k in before else None
        if src is not None:
            used.add(src)
            renamed += src != k
        else:
            renamed += 1  # a new tensor derived from the checkpoint's under a new name
    return renamed, [k for k in before if k not in used]
