"""Export of a model's whole inference path, post-processing included (``tools/export.py``).

The exported program takes one image and returns its detections as plain tensors::

    fields = export_torchscript(model, example_image, "model.ts")
    module, info = load_torchscript("model.ts")
    boxes, scores, classes, masks = module(image)     # info["outputs"] names them

* input: a (3, H, W) uint8 image in ``INPUT.FORMAT``, already resized to the test size
  (shorter side ``INPUT.MIN_SIZE_TEST``, longer at most ``MAX_SIZE_TEST``; recorded in ``info``),
  of any H and W;
* outputs, at (H, W): ``pred_boxes`` (R, 4) XYXY, ``scores`` (R,), ``pred_classes`` (R,) int64
  and, for models with masks, ``pred_masks`` (R, H, W) bool; R varies with the image.

The program is traced (``torch.jit.trace`` through detectron2's ``TracingAdapter``): Python
control flow that depends on the data (number of detections, NMS, the image size) is written in
the models either as tensor operations or in functions that are scripted when traced
(``torch.jit.script_if_tracing``), so that the trace is valid for other sizes and detection
counts; :func:`check_exported` compares a program with the eager model. ONNX
(:func:`export_onnx`) converts the same trace.
"""

import json
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.export import TracingAdapter
from detectron2.structures import Instances

OUTPUT_FIELDS = ("pred_boxes", "scores", "pred_classes", "pred_masks")
INFO_FILE = "instseg_export.json"


class ExportError(RuntimeError):
    """The model cannot be exported (in this format); the message says why."""


def output_fields(instances: Instances) -> Tuple[str, ...]:
    """The :data:`OUTPUT_FIELDS` that a model's ``Instances`` hold, in that order."""
    fields = tuple(f for f in OUTPUT_FIELDS if instances.has(f))
    if fields[:3] != OUTPUT_FIELDS[:3]:
        raise ExportError(
            f"the model's detections lack {sorted(set(OUTPUT_FIELDS[:3]) - set(fields))}; "
            "every method gives pred_boxes, scores and pred_classes"
        )
    return fields


def as_tensors(instances: Instances, fields: Sequence[str]) -> Tuple[torch.Tensor, ...]:
    """The ``fields`` of ``instances`` as tensors (``pred_boxes`` as its (R, 4) tensor)."""
    values = [instances.get(f) for f in fields]
    return tuple(v.tensor if f == "pred_boxes" else v for f, v in zip(fields, values))


def _inference(fields: Sequence[str]) -> Callable:
    def run(model, image):
        return as_tensors(model([{"image": image}])[0]["instances"], fields)

    return run


def trace(model: torch.nn.Module, image: torch.Tensor) -> Tuple[torch.jit.ScriptModule, tuple]:
    """Trace ``model``'s inference on one image (see the module doc); return the traced
    module and the names of its outputs.

    Args:
        model: a meta-architecture in eval mode.
        image: (3, H, W) uint8 example. It must give at least one detection: a trace records
            one path through the post-processing, and that of "no detection" may skip stages.
    """
    if model.training:
        raise ValueError("export: put the model in eval mode first")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"export: expected a (3, H, W) image, got {tuple(image.shape)}")
    with torch.no_grad():
        instances = model([{"image": image}])[0]["instances"]
    if len(instances) == 0:
        raise ExportError(
            "the example image gives no detection, so the trace would not contain the "
            "post-processing of detections; export with an image on which the model detects "
            "something (or lower the model's test score threshold)"
        )
    fields = output_fields(instances)
    adapter = TracingAdapter(model, (image,), _inference(fields))
    traced = torch.jit.trace(adapter, (image,), check_trace=False)
    return traced, fields


def export_torchscript(
    model: torch.nn.Module, image: torch.Tensor, path: str, info: Dict = None
) -> Tuple[str, ...]:
    """Trace (:func:`trace`) and save to ``path`` with ``info`` (e.g. the classes and the
    input format) plus the output names stored in the file; return the output names."""
    traced, fields = trace(model, image)
    record = dict(info or {}, outputs=list(fields))
    torch.jit.save(traced, path, _extra_files={INFO_FILE: json.dumps(record)})
    return fields


def load_torchscript(path: str, device: str = "cpu") -> Tuple[torch.jit.ScriptModule, Dict]:
    """The module saved by :func:`export_torchscript` and its info (``outputs``, ...)."""
    extra = {INFO_FILE: ""}
    module = torch.jit.load(path, map_location=device, _extra_files=extra)
    if not extra[INFO_FILE]:
        raise ExportError(f"{path}: not a file written by export_torchscript (no {INFO_FILE})")
    return module, json.loads(extra[INFO_FILE])


def export_onnx(model: torch.nn.Module, image: torch.Tensor, path: str) -> Tuple[str, ...]:
    """Convert the trace of :func:`trace` to ONNX (TorchScript-based exporter; input
    ``image`` with dynamic height and width, outputs with a dynamic detection count); return
    the output names. An :class:`ExportError` carries the exporter's reason when it fails."""
    traced, fields = trace(model, image)
    axes = {"image": {1: "height", 2: "width"}}
    axes.update({f: {0: "detections"} for f in fields})
    try:
        torch.onnx.export(
            traced, (image,), path, dynamo=False, input_names=["image"],
            output_names=list(fields), dynamic_axes=axes, opset_version=17,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 -- the exporter raises many types
        raise ExportError(f"ONNX export failed: {type(e).__name__}: {e}") from e
    return fields


def onnx_runner(path: str) -> Optional[Callable]:
    """``run(image) -> outputs`` of an ONNX file on onnxruntime's CPU provider; None when
    onnxruntime is not installed; an :class:`ExportError` when it cannot load the file."""
    try:
        import onnxruntime
    except ImportError:
        return None
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 -- onnxruntime raises its own types
        raise ExportError(f"onnxruntime cannot load {path}: {type(e).__name__}: {e}") from e
    return lambda image: [torch.as_tensor(o) for o in session.run(None, {"image": image.numpy()})]


def check_exported(
    model: torch.nn.Module, run: Callable, fields: Sequence[str], images: List[torch.Tensor]
) -> List[dict]:
    """Compare an exported program (``run(image) -> tuple of tensors``) with the eager model
    on ``images``: per image the detection count and whether every output is equal (scores
    and boxes within 1e-5 relative, 1e-4 absolute; classes and masks exactly)."""
    report = []
    for image in images:
        with torch.no_grad():
            eager = as_tensors(model([{"image": image}])[0]["instances"], fields)
            exported = tuple(run(image))
        same = {}
        for f, e, x in zip(fields, eager, exported):
            x = torch.as_tensor(x)
            if e.shape != x.shape:
                same[f] = False
            elif e.dtype.is_floating_point:
                same[f] = bool(torch.allclose(e, x.to(e.dtype), rtol=1e-5, atol=1e-4))
            else:
                same[f] = bool(torch.equal(e, x.to(e.dtype)))
        report.append({"size": tuple(image.shape[1:]), "detections": len(eager[0]), **same})
    return report
