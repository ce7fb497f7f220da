"""Helpers for the test suites of the platform and of every method package.

``register_tiny_shapes(folder)`` registers ``shapes_tiny_train`` / ``shapes_tiny_val`` (a few
images, same generator as the real splits) so that end-to-end tests train and evaluate in
seconds; ``train_and_evaluate`` runs train_net's path in-process and returns COCO results.
"""

import os
from typing import Callable, List, Optional, Sequence, Tuple

from .data.coco import register_coco_instances_checked
from .data.shapes import ShapesSpec, generate_shapes

TINY_SPECS = {
    "shapes_tiny_train": ShapesSpec(num_images=16, seed=100),
    "shapes_tiny_val": ShapesSpec(num_images=6, seed=101),
}

TINY_OPTS = [
    "DATASETS.TRAIN", "('shapes_tiny_train',)",
    "DATASETS.TEST", "('shapes_tiny_val',)",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "3",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", "100000",
    "DATALOADER.NUM_WORKERS", "0",
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",  # the shapes configs' pretrained backbone takes minutes to build
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MIN_SIZE_TEST", "96",
]  # fmt: skip


def register_tiny_shapes(folder: str) -> Tuple[str, ...]:
    """Generate (once per folder) and register the tiny shapes splits; return their names."""
    for name, spec in TINY_SPECS.items():
        out = os.path.join(folder, name)
        json_file = os.path.join(out, "annotations.json")
        if not os.path.isfile(json_file):
            generate_shapes(out, spec)
        register_coco_instances_checked(name, json_file, os.path.join(out, "images"), replace=True)
    return tuple(TINY_SPECS)


def build_tiny_cfg(config_file: str, output_dir: str, opts: Sequence[str] = ()):
    """Config of ``config_file`` on the tiny splits, 3 iterations, CPU, frozen."""
    from .engine import build_config

    cfg = build_config(config_file, list(TINY_OPTS) + ["OUTPUT_DIR", output_dir] + list(opts))
    cfg.freeze()
    return cfg


def train_and_evaluate(config_file: str, output_dir: str, opts: Sequence[str] = ()) -> dict:
    """Train with the project's Trainer on the tiny splits, then evaluate; return results.

    Call :func:`register_tiny_shapes` first. The results are COCOEvaluator's
    ``{"bbox": {...}, "segm": {...}}``.
    """
    from .engine import Trainer

    cfg = build_tiny_cfg(config_file, output_dir, opts)
    os.makedirs(output_dir, exist_ok=True)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer.train()


def loss_history(output_dir: str, key: str = "total_loss") -> List[float]:
    """Values of ``key`` logged to ``metrics.json`` by a training run, in order."""
    import json

    vals = []
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            rec = json.loads(line)
            if key in rec:
                vals.append(rec[key])
    return vals


# ----------------------------------------------------------------------------------------
# Parity with the reference implementations
# ----------------------------------------------------------------------------------------
def parity_tensor(name: str, shape: Sequence[int]) -> "torch.Tensor":
    """The deterministic value of parameter ``name`` (the project's name) of ``shape``.

    Both the parity fixture generators (``tools/parity/``, on the reference's model, through the
    reference -> project key map) and the parity tests (on the project's model) set every
    parameter with this rule, so that the two models hold the same weights without storing them.
    The values are a function of the name and shape only (seeded by the name's CRC-32, drawn in
    float64): weights ~ N(0, 1 / fan_in) so activations stay bounded through deep stacks; norm
    scales ~ 1 + N(0, 0.1); running variances ~ 1 + |N(0, 0.1)|; other 1-D tensors (biases,
    running means) ~ N(0, 0.1); integer buffers are zero.
    """
    import zlib

    import torch

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


def parity_state_dict(model_or_state, overrides: Optional[dict] = None) -> dict:
    """``{name: parity_tensor(name, shape)}`` for every floating-point entry of a model's state
    dict (a module or a state dict); integer buffers (e.g. ``num_batches_tracked``) are kept.
    ``overrides`` maps a name to a constant (e.g. a classifier's prior bias) or a tensor."""
    import torch

    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    out = {}
    for k, v in state.items():
        if not torch.is_floating_point(v):
            out[k] = v.clone()
            continue
        out[k] = _parity_value(k, v.shape, v.dtype, overrides)
    return out


def _parity_value(name: str, shape, dtype, overrides: Optional[dict]):
    """``parity_tensor(name, shape)`` or ``overrides[name]`` (a constant or a tensor), as
    ``dtype``."""
    import torch

    v = parity_tensor(name, shape)
    if overrides and name in overrides:
        o = overrides[name]
        v = o.clone() if torch.is_tensor(o) else torch.full_like(v, float(o))
    return v.to(dtype)


def parity_name_map(reference_params: dict, convert) -> dict:
    """``{reference name: project name}`` of a reference state dict, as ``convert`` (the
    project's converter: reference state dict -> project state dict) renames it; ``None`` for
    the entries it drops (e.g. buffers the project derives from its config).

    Args:
        reference_params: ``{name: (shape, dtype name)}`` of the reference's state dict.
        convert: the converter. It must only rename and drop entries, not change values.

    Each entry is probed with a constant tensor holding its index, so the map follows the
    values through any renaming.
    """
    import torch

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
        out[names[i]] = new
    return out


def parity_reference_state(reference_params: dict, name_map: dict, overrides=None) -> dict:
    """The state dict in the **reference's** names whose entries are the parity values of their
    project names: ``parity_tensor(name_map[k], shape)`` for floating-point entries (with
    ``overrides`` keyed by project name, as :func:`parity_state_dict`), zeros for integer ones.
    Entries the converter drops (``name_map[k] is None``) are left out.

    The fixture generators set it on the reference model; the parity tests load it through the
    project's checkpoint path, so both models hold the same weights.
    """
    import torch

    out = {}
    for k, (shape, dtype) in reference_params.items():
        name, dtype = name_map[k], getattr(torch, dtype)
        if name is None:
            continue
        if dtype.is_floating_point:
            out[k] = _parity_value(name, shape, dtype, overrides)
        else:
            out[k] = torch.zeros(tuple(shape), dtype=dtype)
    return out


def parity_batched_inputs(inputs: dict, training: bool) -> list:
    """The model inputs (the mapper's format) of a parity fixture's ``inputs``: ``images``
    (uint8 CHW), ``out_sizes`` (the ``height`` / ``width`` the outputs are resized to) and, per
    image, ``gt`` = ``boxes`` (G, 4) XYXY, ``classes`` (G,), ``masks`` (G, H, W) bool (as
    ``instances`` with BitMasks when ``training``). Fresh copies each call."""
    from detectron2.structures import BitMasks, Boxes, Instances

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


def parity_reference_state_dict(
    template: dict, convert: Callable[[dict], dict], overrides: Optional[dict] = None
) -> dict:
    """The deterministic weights of a model, in the REFERENCE implementation's names.

    Every entry gets ``parity_tensor(project name, project shape)`` (reshaped to the reference's
    shape, e.g. a 1x1 conv that is a linear layer in the project), the project's name and shape
    being what ``convert`` (the project's converter of reference checkpoints) makes of it; so a
    reference model set with these weights and the project's model loading them through its
    converter hold the same values. Integer buffers are zero.

    Args:
        template: ``{reference name: (shape, dtype name)}``, e.g. from a parity fixture.
        convert: reference-named state dict -> project-named state dict.
        overrides: by project name, as :func:`parity_state_dict`.
    """
    import torch

    names = list(template)
    tagged = {k: torch.full(tuple(shape), float(i)) for i, (k, (shape, _)) in
              enumerate(template.items())}  # fmt: skip
    converted = convert(tagged)
    values = parity_state_dict(converted, overrides)
    out = {}
    for key, tag in converted.items():
        ref = names[int(tag.reshape(-1)[0])]
        shape, dtype = template[ref]
        if getattr(torch, dtype).is_floating_point:
            out[ref] = values[key].reshape(shape)
        else:
            out[ref] = torch.zeros(shape, dtype=getattr(torch, dtype))
    if sorted(out) != sorted(names):
        raise ValueError(f"the converter lost or duplicated keys: {sorted(set(names) - set(out))}")
    return out


def load_reference_weights(model, state_dict: dict, folder: str) -> str:
    """Load a state dict in a reference implementation's names into ``model`` the way
    ``MODEL.WEIGHTS`` does: saved as a checkpoint file in ``folder`` and read back by
    :class:`~instseg_d2.engine.checkpoint.InstSegCheckpointer` (strict: no parameter of the
    model may stay unloaded), which converts it. Returns the file's path."""
    import torch

    from .engine.checkpoint import InstSegCheckpointer

    path = os.path.join(folder, "reference_weights.pth")
    torch.save({"model": state_dict}, path)
    InstSegCheckpointer(model, strict=True).load(path)
    return path


def assert_parity(name: str, actual, expected, rtol: float = 1e-5) -> float:
    """Assert that ``actual`` equals a reference implementation's ``expected`` to ``rtol``
    relative to the scale of ``expected`` (its largest magnitude), i.e.
    ``max |actual - expected| <= rtol * max |expected|``; shapes must be equal. Prints and
    returns that relative difference (``pytest -s`` shows the figures)."""
    import torch

    actual = torch.as_tensor(actual).detach().double()
    expected = torch.as_tensor(expected).detach().double()
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    diff = float((actual - expected).abs().max()) if expected.numel() else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    rel = diff / scale if scale > 0 else diff
    print(f"parity {name}: max abs diff {diff:.3g}, relative to max |reference| {rel:.3g}")
    assert rel <= rtol, f"{name}: max abs diff {diff:.3g} is {rel:.3g} of the reference's scale"
    return rel


def unpack_bits(packed: dict) -> "torch.Tensor":
    """A bool tensor that a parity fixture stores 8 pixels a byte (``{"bits", "shape"}``,
    ``numpy.packbits`` of the flattened mask, as ``tools/parity/harness.py: pack_bits``)."""
    import numpy as np
    import torch

    n = int(np.prod(packed["shape"]))
    bits = np.unpackbits(packed["bits"].numpy(), count=n).astype(bool)
    return torch.from_numpy(bits.reshape(tuple(packed["shape"])))
