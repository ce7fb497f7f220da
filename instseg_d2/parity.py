"""Parity with the reference implementations: the same weights in both models, and comparisons.

The fixture generators (``tools/parity/``) run a reference implementation's own code and save
what it computed; the parity tests rebuild the project's model and compare. Neither stores
weights: every parameter is set by :func:`parity_tensor` from its **project** name and shape.

The reference model needs those values under the reference's names. :func:`parity_name_map`
follows each reference entry through the project's converter of reference checkpoints to its
project name, and :func:`parity_reference_state` builds the state dict in the reference's names
that holds, for every entry, the parity value of its project name. The generators set it on the
reference model; the tests load it through the project's checkpoint path
(:func:`load_reference_weights`), so both models hold the same values.
"""

import os
import zlib
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.structures import BitMasks, Boxes, Instances

# {reference name: (shape, dtype name, e.g. "float32")}: a reference state dict's layout
ReferenceParams = Dict[str, Tuple[Sequence[int], str]]
Converter = Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]


def parity_tensor(name: str, shape: Sequence[int]) -> torch.Tensor:
    """The deterministic value of parameter ``name`` (the project's name) of ``shape``.

    The values are a function of the name and shape only (seeded by the name's CRC-32, drawn in
    float64, returned as float32): weights ~ N(0, 1 / fan_in) so activations stay bounded through
    deep stacks; norm scales ~ 1 + N(0, 0.1); running variances ~ 1 + |N(0, 0.1)|; other 1-D
    tensors (biases, running means) ~ N(0, 0.1).
    """
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
    leaf = name.rsplit(".", 1)[-1]
    if len(shape) >= 2:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= int(s)
        x = x / fan_in**0.5
    elif leaf == "running_var":
        x = 1 + 0.1 * x.abs()
    elif leaf == "weight":  # 1-D weights are norm scales
        x = 1 + 0.1 * x
    else:
        x = 0.1 * x
    return x.float()


def parity_name_map(reference_params: ReferenceParams, convert: Converter) -> Dict[str, str]:
    """``{reference name: project name}`` of a reference state dict, as ``convert`` (the
    project's converter: reference state dict -> project state dict) renames it; ``None`` for
    the entries it drops (e.g. buffers the project derives from its config).

    Each entry is probed with a constant tensor holding its index, so the map follows the
    values through any renaming and reshaping (e.g. a 1x1 conv that is a linear layer here).

    Raises:
        ValueError: the converter changed values, so that a name cannot be followed.
    """
    names = list(reference_params)
    probes = {
        k: torch.tensor(float(i), dtype=torch.float64).expand(tuple(reference_params[k][0]))
        for i, k in enumerate(names)
    }
    out = dict.fromkeys(names)
    for new, v in convert(dict(probes)).items():
        flat = v.reshape(-1)
        i = int(flat[0].item()) if flat.numel() else None
        if i is None or not 0 <= i < len(names) or (flat != i).any():
            raise ValueError(f"the converter changed the values of {new!r}; cannot map its name")
        if out[names[i]] is not None:
            raise ValueError(
                f"the converter gave {names[i]!r} two names: {out[names[i]]!r}, {new!r}"
            )
        out[names[i]] = new
    return out


def parity_reference_state(
    reference_params: ReferenceParams,
    names: Union[Dict[str, Optional[str]], Converter],
    overrides: Optional[dict] = None,
) -> Dict[str, torch.Tensor]:
    """The state dict in the **reference's** names whose entries are the parity values of their
    project names.

    Args:
        reference_params: ``{reference name: (shape, dtype name)}``, e.g. from a fixture.
        names: the :func:`parity_name_map`, or the converter to compute it with.
        overrides: by project name, a constant (e.g. a classifier's prior bias) or a tensor
            that replaces the parity value.

    Returns:
        floating-point entries: ``parity_tensor(project name, shape)`` (or the override) in the
        entry's dtype; integer entries (e.g. ``num_batches_tracked``): zeros. Entries the
        converter drops (project name ``None``) are left out.
    """
    if callable(names):
        names = parity_name_map(reference_params, names)
    out = {}
    for k, (shape, dtype_name) in reference_params.items():
        name, dtype = names[k], getattr(torch, dtype_name)
        if name is None:
            continue
        if not dtype.is_floating_point:
            out[k] = torch.zeros(tuple(shape), dtype=dtype)
            continue
        v = parity_tensor(name, shape)
        if overrides and name in overrides:
            o = overrides[name]
            v = o.clone().reshape(v.shape) if torch.is_tensor(o) else torch.full_like(v, float(o))
        out[k] = v.to(dtype)
    return out


def load_reference_weights(model: torch.nn.Module, state_dict: dict, folder: str) -> str:
    """Load a state dict in a reference implementation's names into ``model`` the way
    ``MODEL.WEIGHTS`` does: saved as a checkpoint file in ``folder`` and read back by
    :class:`~instseg_d2.engine.checkpoint.InstSegCheckpointer` (strict: no parameter of the
    model may stay unloaded), which converts it. Returns the file's path."""
    from .engine.checkpoint import InstSegCheckpointer

    path = os.path.join(folder, "reference_weights.pth")
    torch.save({"model": state_dict}, path)
    InstSegCheckpointer(model, strict=True).load(path)
    return path


def parity_batched_inputs(inputs: dict, training: bool) -> list:
    """The model inputs (the mapper's format) of a parity fixture's ``inputs``: ``images``
    (uint8 CHW), ``out_sizes`` (the ``height`` / ``width`` the outputs are resized to) and, per
    image, ``gt`` = ``boxes`` (G, 4) XYXY, ``classes`` (G,), ``masks`` (G, H, W) bool (as
    ``instances`` with BitMasks when ``training``). Fresh copies each call."""
    out = []
    for img, (oh, ow), g in zip(inputs["images"], inputs["out_sizes"], inputs["gt"]):
        d = {"image": img.clone(), "height": oh, "width": ow}
        if training:
            inst = Instances(tuple(img.shape[-2:]))
            inst.gt_boxes = Boxes(g["boxes"].clone())
            inst.gt_classes = g["classes"].clone()
            inst.gt_masks = BitMasks(g["masks"].clone())
            d["instances"] = inst
        out.append(d)
    return out


def assert_parity(name: str, actual, expected, rtol: float = 1e-5) -> float:
    """Assert that ``actual`` equals a reference implementation's ``expected`` to ``rtol``
    relative to the scale of ``expected`` (its largest magnitude), i.e.
    ``max |actual - expected| <= rtol * max |expected|``; shapes must be equal. Prints and
    returns that relative difference (``pytest -s`` shows the figures)."""
    actual = torch.as_tensor(actual).detach().double()
    expected = torch.as_tensor(expected).detach().double()
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    diff = float((actual - expected).abs().max()) if expected.numel() else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    rel = diff / scale if scale > 0 else diff
    print(f"parity {name}: max abs diff {diff:.3g}, relative to max |reference| {rel:.3g}")
    assert rel <= rtol, f"{name}: max abs diff {diff:.3g} is {rel:.3g} of the reference's scale"
    return rel


def unpack_bits(packed: dict) -> torch.Tensor:
    """A bool tensor that a parity fixture stores 8 pixels a byte (``{"bits", "shape"}``,
    ``numpy.packbits`` of the flattened mask, as ``tools/parity/harness.py: pack_bits``)."""
    n = int(np.prod(packed["shape"]))
    bits = np.unpackbits(packed["bits"].numpy(), count=n).astype(bool)
    return torch.from_numpy(bits.reshape(tuple(packed["shape"])))
