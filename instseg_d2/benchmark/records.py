"""The comparison's records: what a report needs of each finished run, kept in the report
folder, so that a sweep can span sittings on machines that keep nothing but the report.

``<report-dir>/runs/<run>.json`` is a finished run's ``result.json`` (final metrics, AP curve,
machine minutes) plus its predictions on the prediction grid's images; ``<report-dir>/bench/
<model>.json`` is a model's measured cost. A run whose record exists is not trained again: the
record is written back as the run's ``result.json`` (:func:`restore_records`).
"""

import json
import os
from typing import List, Optional, Sequence

from .sweep import Run, write_json


def record_path(report_dir: str, run: Run) -> str:
    return os.path.join(report_dir, "runs", os.path.basename(run.out_dir) + ".json")


def write_records(results: Sequence[dict], runs: Sequence[Run], report_dir: str) -> None:
    """One record per finished run: its result (with ``run_min``, as :func:`load_results`
    returns it), in the order of ``runs``."""
    done = [r for r in runs if r.done()]
    os.makedirs(os.path.join(report_dir, "runs"), exist_ok=True)
    for run, res in zip(done, results):
        write_json(record_path(report_dir, run), res)


def restore_records(report_dir: str, root: str, runs: Sequence[Run], max_iters: dict) -> List[Run]:
    """Write every record of ``<report_dir>/runs`` whose run has no ``result.json`` under
    ``<root>/runs`` back there, so that the run counts as done. ``max_iters``: ``{config:
    SOLVER.MAX_ITER}`` of this sweep. A record of one of ``runs`` that another protocol made
    (other options, another number of iterations) is an error naming the record. Returns the
    restored runs."""
    folder = os.path.join(report_dir, "runs")
    names = (
        sorted(f for f in os.listdir(folder) if f.endswith(".json"))
        if os.path.isdir(folder)
        else []
    )
    by_dir = {os.path.basename(r.out_dir): r for r in runs}
    restored = []
    for name in names:
        path = os.path.join(folder, name)
        with open(path) as f:
            rec = json.load(f)
        missing = [k for k in ("model", "config", "seed", "iterations") if k not in rec]
        if missing:
            raise ValueError(f"{path}: not a comparison record (no {', '.join(missing)})")
        run = by_dir.get(name[: -len(".json")])
        if run is not None:
            theirs, ours = _pairs(rec.get("opts", [])), _pairs(run.opts)
            if theirs != ours:
                raise ValueError(
                    f"{path}: made with the options {sorted(set(theirs) - set(ours))}, this "
                    f"sweep trains {run.model} seed {run.seed} with "
                    f"{sorted(set(ours) - set(theirs))}; remove the record (or the report "
                    "folder) to train it again"
                )
            if rec["iterations"] != max_iters.get(run.config, rec["iterations"]):
                raise ValueError(
                    f"{path}: trained {rec['iterations']} iterations, {run.config} now sets "
                    f"SOLVER.MAX_ITER {max_iters[run.config]}; remove the record (or the report "
                    "folder) to train it again"
                )
        out_dir = os.path.join(root, "runs", name[: -len(".json")])
        result = os.path.join(out_dir, "result.json")
        if os.path.isfile(result):
            continue
        os.makedirs(out_dir, exist_ok=True)
        write_json(result, rec)
        restored.append(Run(rec["model"], rec["config"], rec["seed"], out_dir, rec.get("opts", [])))
    return restored


def _pairs(opts: Sequence) -> List[tuple]:
    """``[KEY, VALUE, ...]`` -> ``[(KEY, VALUE), ...]`` (as strings, the last one of a key)."""
    return sorted(dict(zip(map(str, opts[::2]), map(str, opts[1::2]))).items())


def encode_predictions(instances, score_thresh: float) -> List[dict]:
    """detectron2 ``Instances`` (cpu) -> JSON: the instances scoring at least ``score_thresh``,
    ``{"box": [x0, y0, x1, y1], "class": c, "score": s, "mask": COCO RLE or None}``."""
    import numpy as np
    import pycocotools.mask as mask_util

    keep = instances[instances.scores >= score_thresh]
    masks = keep.pred_masks.numpy() if keep.has("pred_masks") else None
    out = []
    for i in range(len(keep)):
        rle = None
        if masks is not None:
            rle = mask_util.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            rle = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
        out.append({
            "box": [round(float(v), 2) for v in keep.pred_boxes.tensor[i].tolist()],
            "class": int(keep.pred_classes[i]), "score": round(float(keep.scores[i]), 4),
            "mask": rle,
        })  # fmt: skip
    return out


def decode_predictions(preds: Sequence[dict], height: int, width: int):
    """The inverse of :func:`encode_predictions`: ``Instances`` of an H x W image."""
    import numpy as np
    import pycocotools.mask as mask_util
    import torch
    from detectron2.structures import Boxes, Instances

    inst = Instances((height, width))
    inst.pred_boxes = Boxes(
        torch.tensor([p["box"] for p in preds], dtype=torch.float32).view(-1, 4)
    )
    inst.scores = torch.tensor([p["score"] for p in preds], dtype=torch.float32)
    inst.pred_classes = torch.tensor([p["class"] for p in preds], dtype=torch.int64)
    if preds and all(p["mask"] is not None for p in preds):
        masks = [mask_util.decode({"size": p["mask"]["size"], "counts": p["mask"]["counts"]})
                 for p in preds]  # fmt: skip
        inst.pred_masks = torch.from_numpy(np.stack(masks).astype(bool))
    return inst


def stored_predictions(result: dict, files: Sequence[str]) -> Optional[List[List[dict]]]:
    """A run's stored grid predictions if they are of exactly these images, else None."""
    grid = result.get("grid")
    if grid and grid.get("images") == [os.path.basename(f) for f in files]:
        return grid["predictions"]
    return None
