"""Measure one model: params, GFLOPs, model-only and end-to-end latency, peak memory, COCO AP.

Run in a fresh process per model (``python -m instseg_d2.benchmark.runner SPEC OUT``) so that
peak memory is the model's own; :mod:`tools.benchmark` drives it.

Definitions (also printed with every table):

* **model**: the network and the method's own inference (NMS, mask assembly, ...) on an image
  tensor already decoded, resized and on the device; results stay at network resolution when
  the meta-architecture supports ``inference(..., do_postprocess=False)`` (all of this
  project's do), i.e. no resizing/pasting of masks to the original image.
* **e2e**: image file decode + test-time resize + model + post-processing to the original
  image size + results moved to the CPU.
* Both: warm-up runs, then the median of N timed runs (CUDA synchronised).
* **peak mem**: CUDA, ``max_memory_allocated`` during the e2e runs; CPU, peak resident set
  size of the measuring process (model, inputs and libraries included).
"""

import inspect
import json
import logging
import resource
import statistics
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.utils.logger import setup_logger

from ..data.image_io import read_image
from ..engine import Trainer, build_config, load_model
from ..engine.setup import register_datasets
from ..engine.summary import SUMMARY_METRICS as AP_METRICS
from ..utils.profiling import record_stages

logger = logging.getLogger(__name__)


def _sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, n_warmup: int, n_iter: int, device: str, stages: Optional[Dict] = None):
    """Median wall time and median CPU time (this process, all its threads) of ``fn(i)``."""
    for i in range(n_warmup):
        fn(i)
    times, cpu = [], []
    for i in range(n_iter):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        if stages is None:
            fn(i)
        else:
            with record_stages() as st:
                fn(i)
            for k, v in st.items():
                stages.setdefault(k, []).append(v)
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu)


def _supports_no_postprocess(model) -> bool:
    fn = getattr(model, "inference", None)
    return fn is not None and "do_postprocess" in inspect.signature(fn).parameters


def _evaluates(spec: dict) -> bool:
    return bool(spec.get("weights")) and spec.get("eval", True)


def _build(spec: dict):
    """The model of ``spec``. Without evaluation ``spec['dataset']`` only provides the images,
    so the model keeps the class count of its config (e.g. COCO's 80 for a latency table)."""
    register_datasets(spec.get("register", []))
    opts = list(spec.get("opts", []))
    opts += ["MODEL.DEVICE", spec["device"], "MODEL.WEIGHTS", spec.get("weights") or ""]
    if spec.get("input_size"):
        h, w = spec["input_size"]
        opts += ["INPUT.MIN_SIZE_TEST", min(h, w), "INPUT.MAX_SIZE_TEST", max(h, w)]
    if spec.get("dataset") and _evaluates(spec):
        opts += ["DATASETS.TEST", f"('{spec['dataset']}',)"]
    if spec.get("output_dir"):
        opts += ["OUTPUT_DIR", spec["output_dir"]]
    cfg = build_config(spec["config_file"], [str(o) for o in opts])
    cfg.freeze()
    return cfg, load_model(cfg, spec.get("weights") or "")


def _resize_aug(cfg, input_size):
    if input_size:
        return T.Resize(tuple(input_size))
    return T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)


def _load(cfg, d: dict, aug) -> dict:
    image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)  # 16-bit / float too
    h, w = image.shape[:2]
    image = aug.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(image.transpose(2, 0, 1).copy())
    return {"image": tensor, "height": h, "width": w}


def count_gflops(model, inputs: List[dict]) -> Optional[float]:
    """fvcore GFLOPs (one multiply-add counts as one flop) of the model path, one image."""
    from detectron2.utils.analysis import FlopCountAnalysis

    try:
        if _supports_no_postprocess(model):
            model_fn = lambda m, x: m.inference(x, do_postprocess=False)  # noqa: E731
        else:
            model_fn = None
        with torch.no_grad():
            flops = FlopCountAnalysis(_Wrap(model, model_fn), inputs)
            flops.set_op_handle("aten::matmul", _matmul_flops)
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            flops.tracer_warnings("none")
            return flops.total() / 1e9
    except Exception as e:  # tracing fails on some data-dependent control flow
        logger.warning("GFLOPs not counted: %s: %s", type(e).__name__, e)
        return None


def _matmul_flops(inputs, outputs) -> int:
    """Multiply-adds of ``aten::matmul``: output elements x the contracted length. Unlike
    fvcore's handle, it also takes 1-D operands (matrix-vector and vector products)."""
    from fvcore.nn.jit_handles import get_shape

    k = get_shape(inputs[0])[-1]
    return int(np.prod(get_shape(outputs[0]), dtype=np.int64)) * k


class _Wrap(torch.nn.Module):
    """The model (or ``fn(model, inputs)``) for tracing, returning the outputs of every leaf
    module too: the tracer drops computations whose results are not returned, and an untrained
    model's data-dependent post-processing may discard whole branches (e.g. a mask branch when
    no candidate passes the score threshold), which would then not be counted."""

    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, inputs):
        kept: List[torch.Tensor] = []

        def keep(module, args, out):
            kept.extend(t for t in (out if isinstance(out, (tuple, list)) else [out])
                        if isinstance(t, torch.Tensor))  # fmt: skip

        leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
        handles = [m.register_forward_hook(keep) for m in leaves]
        try:
            out = self.fn(self.model, inputs) if self.fn else self.model(inputs)
        finally:
            for h in handles:
                h.remove()
        return out, tuple(kept)


def measure(spec: dict) -> dict:
    """Measure the model of ``spec`` (keys: config_file, weights, device, opts, input_size,
    dataset, num_images, warmup, iters, eval, train_memory)."""
    setup_logger(name="instseg_d2")
    setup_logger(name="detectron2")
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    cfg, model = _build(spec)
    res = {"params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    dataset = spec.get("dataset") or cfg.DATASETS.TEST[0]
    dicts = DatasetCatalog.get(dataset)[: spec.get("num_images", 10)]
    aug = _resize_aug(cfg, spec.get("input_size"))
    res["input"] = (
        "x".join(map(str, spec["input_size"]))
        if spec.get("input_size")
        else (f"short side {cfg.INPUT.MIN_SIZE_TEST}")
    )
    res["dataset"] = dataset

    pre = []
    for d in dicts:
        x = _load(cfg, d, aug)
        x["height"], x["width"] = x["image"].shape[1:]
        x["image"] = x["image"].to(device)
        pre.append(x)
    no_post = _supports_no_postprocess(model)
    warmup, iters = spec.get("warmup", 3), spec.get("iters", 10)

    def model_only(i):
        x = [pre[i % len(pre)]]
        return model.inference(x, do_postprocess=False) if no_post else model(x)

    def end_to_end(i):
        out = model([_load(cfg, dicts[i % len(dicts)], aug)])
        return [{k: v.to("cpu") for k, v in o.items()} for o in out]

    stages: Dict[str, list] = {}
    amp = torch.autocast(
        "cuda" if device.startswith("cuda") else "cpu",
        dtype=torch.float16 if device.startswith("cuda") else torch.bfloat16,
        enabled=bool(spec.get("amp")),
    )
    with torch.no_grad(), amp:
        res["model_ms"] = 1000 * _time(model_only, warmup, iters, device)[0]
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        wall, cpu = _time(end_to_end, warmup, iters, device, stages)
        res["e2e_ms"], res["cpu_ms"] = 1000 * wall, 1000 * cpu
        if device.startswith("cuda"):
            res["peak_mem_MB"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            res["peak_mem_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["stages_ms"] = {k: 1000 * statistics.median(v) for k, v in stages.items()}
    res["gflops"] = count_gflops(model, [pre[0]])
    if _evaluates(spec):
        results = Trainer.test(cfg, model)  # one test dataset: {task: {metric: value}}
        for task in ("segm", "bbox", "boundary"):
            if task in results:
                res[task] = {k: float(results[task][k]) for k in AP_METRICS if k in results[task]}
    return res


def measure_train_memory(spec: dict) -> dict:
    """Peak memory of one training step (forward + backward) with ``spec['train_batch']``."""
    setup_logger(name="detectron2")
    register_datasets(spec.get("register", []))
    opts = list(spec.get("opts", [])) + [
        "MODEL.DEVICE", spec["device"], "SOLVER.IMS_PER_BATCH", spec.get("train_batch", 2),
        "DATALOADER.NUM_WORKERS", 0,
    ]  # fmt: skip
    if spec.get("input_size"):
        h, w = spec["input_size"]
        opts += ["INPUT.MIN_SIZE_TRAIN", f"({min(h, w)},)", "INPUT.MAX_SIZE_TRAIN", max(h, w)]
    cfg = build_config(spec["config_file"], [str(o) for o in opts])
    cfg.freeze()
    model = Trainer.build_model(cfg)
    model.train()
    batch = next(iter(Trainer.build_train_loader(cfg)))
    from detectron2.utils.events import EventStorage

    device = spec["device"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    with EventStorage(0):
        losses = model(batch)
        sum(losses.values()).backward()
    if device.startswith("cuda"):
        return {"train_peak_mem_MB": torch.cuda.max_memory_allocated() / 2**20}
    return {"train_peak_mem_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(spec: dict) -> dict:
    """:func:`measure` (or :func:`measure_train_memory` with ``mode="train_memory"``) of
    ``spec`` in a fresh process, so that its peak memory is the model's own; ``{"error": ...}``
    with the last line of its output if it fails."""
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, "-m", "instseg_d2.benchmark.runner", spec_path, out_path]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            tail = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
            print(proc.stdout[-3000:], file=sys.stderr)
            return {"error": f"exit {proc.returncode}: {tail[0][:200]}"}
        with open(out_path) as f:
            return json.load(f)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    fn = measure_train_memory if spec.get("mode") == "train_memory" else measure
    result = fn(spec)
    with open(argv[1], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
