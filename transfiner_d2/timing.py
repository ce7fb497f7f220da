"""Inference cost of a Mask Transfiner model: CPU and wall time per image and in all, the
instances refined and their quadtree nodes, and the COCO AP of a whole test set.

    python -m transfiner_d2.timing --config-file configs/Transfiner/shapes_Transfiner_R_18.yaml \\
        --weights model_final.pth [--num-images 10] [--json out.json] [KEY VALUE ...]

Runs the config's first test set one image at a time (the test-time resize), with the data
loading in this process (no loader workers), so that ``time.process_time`` counts all the CPU
time the evaluation takes (of every torch thread). With ``--num-images 0`` (every image) the
predictions also go through the project's COCO evaluator, and the totals are those of the
whole evaluation (data, model, COCO AP); on a subset of the images no AP is computed and the
totals are data + model. The machine is printed with the figures.
"""

import argparse
import itertools
import json
import statistics
import tempfile
import time
from typing import Iterable, List, Optional

import torch
from detectron2.data import build_detection_test_loader

from instseg_d2.benchmark import record_stages
from instseg_d2.benchmark.machine import describe_machine, machine_line
from instseg_d2.data import InstanceDatasetMapper
from instseg_d2.engine import build_config, build_coco_evaluator, load_model


def measure_images(model, batches: Iterable[list], evaluator=None) -> List[dict]:
    """Run ``model`` (a Mask Transfiner in eval mode) on one-image batches.

    Args:
        batches: lists of one mapped dataset dict each.
        evaluator: a DatasetEvaluator that gets every prediction (outside the timed part).

    Returns:
        per image: ``wall_s`` and ``cpu_s`` of the forward pass, ``refine_s`` (wall time of
        the refinement stage), ``detections``, ``refined`` (instances refined) and ``nodes``
        (their quadtree nodes summed, per level).
    """
    refiner = model.roi_heads.mask_head.refiner
    rows = []
    with torch.no_grad():
        for batch in batches:
            refiner.last_nodes = (0, [0] * refiner.depth)
            cpu, wall = time.process_time(), time.perf_counter()
            with record_stages() as stages:
                out = model(batch)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            refined, nodes = refiner.last_nodes
            rows.append({
                "wall_s": wall, "cpu_s": cpu, "refine_s": stages.get("refine", 0.0),
                "detections": len(out[0]["instances"]), "refined": refined, "nodes": nodes,
            })  # fmt: skip
            if evaluator is not None:
                evaluator.process(batch, out)
    return rows


def nodes_per_instance(rows: List[dict]) -> List[float]:
    """Mean quadtree nodes per refined instance, per level, over all images of ``rows``."""
    refined = sum(r["refined"] for r in rows)
    return [
        sum(r["nodes"][k] for r in rows) / max(refined, 1) for k in range(len(rows[0]["nodes"]))
    ]


def summary(rows: List[dict], total_wall: float, total_cpu: float, results: Optional[dict]):
    """The figures of a run as one dict (JSON-friendly)."""
    out = {
        "images": len(rows),
        "total_wall_s": total_wall,
        "total_cpu_s": total_cpu,
        "wall_s_per_image": statistics.mean(r["wall_s"] for r in rows),
        "cpu_s_per_image": statistics.mean(r["cpu_s"] for r in rows),
        "refine_s_per_image": statistics.mean(r["refine_s"] for r in rows),
        "refined_per_image": statistics.mean(r["refined"] for r in rows),
        "nodes_per_refined_instance": nodes_per_instance(rows),
    }
    if results:
        for task in ("segm", "bbox", "boundary"):
            if task in results:
                out[task] = {k: results[task][k] for k in ("AP", "AP50", "AP75")}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help='"": random initialisation')
    p.add_argument("--num-images", type=int, default=10, help="0: every image, with COCO AP")
    p.add_argument("--json", default="", help="write the figures there")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.num_images < 0:
        raise SystemExit(f"--num-images must be >= 0, got {args.num_images}")
    cfg = build_config(args.config_file, ["MODEL.WEIGHTS", args.weights] + list(args.opts))
    cfg.freeze()
    if cfg.MODEL.ROI_MASK_HEAD.NAME != "TransfinerMaskHead":
        raise SystemExit(f"{args.config_file}: MODEL.ROI_MASK_HEAD.NAME is not TransfinerMaskHead")
    model = load_model(cfg, args.weights)
    name = cfg.DATASETS.TEST[0]
    mapper = InstanceDatasetMapper(cfg, False)
    with tempfile.TemporaryDirectory() as tmp:
        evaluator = build_coco_evaluator(cfg, name, tmp) if args.num_images == 0 else None
        cpu, wall = time.process_time(), time.perf_counter()
        loader = build_detection_test_loader(cfg, name, mapper=mapper, num_workers=0)
        batches = itertools.islice(loader, args.num_images or None)
        if evaluator is not None:
            evaluator.reset()
        rows = measure_images(model, batches, evaluator)
        results = evaluator.evaluate() if evaluator is not None else None
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if not rows:
        raise SystemExit(f"{name}: no image was run")
    out = summary(rows, wall, cpu, results)
    out.update(machine=machine_line(describe_machine("cpu")), config=args.config_file,
               weights=args.weights, opts=list(args.opts), dataset=name,
               max_instances=cfg.MODEL.TRANSFINER.TEST_MAX_INSTANCES)  # fmt: skip
    what = "data + model + COCO evaluation" if results else "data + model"
    print(f"machine: {out['machine']}")
    print(
        f"{name}, {out['images']} images, TEST_MAX_INSTANCES {out['max_instances']}: "
        f"{wall:.1f} s wall, {cpu:.1f} s CPU in all ({what}); per image "
        f"{out['wall_s_per_image']:.2f} s wall, {out['cpu_s_per_image']:.2f} s CPU, of which "
        f"refine {out['refine_s_per_image']:.2f} s wall; {out['refined_per_image']:.1f} "
        f"instances refined per image, nodes per refined instance by level "
        f"{[round(n) for n in out['nodes_per_refined_instance']]}"
    )
    for task in ("segm", "bbox", "boundary"):
        if task in out:
            print(f"{task} AP {out[task]['AP']:.2f}, AP50 {out[task]['AP50']:.2f}, "
                  f"AP75 {out[task]['AP75']:.2f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**out, "per_image": rows}, f, indent=1)
    return out


if __name__ == "__main__":
    main()
