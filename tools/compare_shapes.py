#!/usr/bin/env python
"""Train every method on the embedded shapes dataset with the common schedule, then compare them.

    python tools/compare_shapes.py [--configs configs/MaskRCNN/shapes_R_18_FPN.yaml ...] \
        [--output-root output/shapes] [--train-only | --bench-only] \
        [--dataset NAME=JSON:IMAGE_DIR ...] [--opts KEY VALUE ...]

For each config (default: every ``configs/*/shapes_*.yaml``, Mask R-CNN first) it runs
``train_net.py --resume`` into ``<output-root>/<Method>_<config>`` unless that folder already has
``model_final.pth``, so an interrupted sweep continues where it stopped (checkpoints every
``--checkpoint-period`` iterations). The training log of each run is ``<run>/train.log``; the
iterations and wall time detectron2 reports are collected into ``<output-root>/training.json``.
Then one ``tools/benchmark.py`` call evaluates all the final checkpoints on the same data (COCO
segm AP, params, GFLOPs, latency, memory) and writes its table to ``<output-root>/benchmark``.
``--dataset`` registers COCO-format datasets for both steps (select them with ``--opts
DATASETS.TRAIN "('NAME',)" DATASETS.TEST "('NAME',)"``), so the same sweep compares the methods
on any data.
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SPEED = re.compile(r"Overall training speed: (\d+) iterations in (\S+) \(([\d.]+) s / it\)")


def default_configs():
    found = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "shapes_*.yaml")))
    found = [os.path.relpath(c, ROOT) for c in found]
    return sorted(found, key=lambda c: (not c.startswith("configs/MaskRCNN/"), c))


def run_name(config):
    method = os.path.basename(os.path.dirname(config))
    return f"{method}_{os.path.splitext(os.path.basename(config))[0]}"


def train(config, out_dir, opts, checkpoint_period, datasets=()):
    """Train (or resume) one config; return detectron2's reported iterations / wall time."""
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", config, "--resume"]
    for d in datasets:
        cmd += ["--dataset", d]
    cmd += ["OUTPUT_DIR", out_dir, "SOLVER.CHECKPOINT_PERIOD", str(checkpoint_period)] + opts
    print("[compare_shapes] " + " ".join(cmd), flush=True)
    start = time.time()
    with open(os.path.join(out_dir, "train.log"), "a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if code != 0:
        return {"error": f"train_net.py exited {code}; see {out_dir}/train.log"}
    with open(os.path.join(out_dir, "train.log")) as f:
        speeds = _SPEED.findall(f.read())
    info = {"session_wall_s": round(time.time() - start, 1)}
    with open(os.path.join(out_dir, "metrics.json")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    info["final_iteration"] = max(r["iteration"] for r in rows if "total_loss" in r) + 1
    if speeds:  # detectron2 times all but the first 2 iterations of a session
        timed, wall, per_iter = speeds[-1]
        info.update(timed_iterations=int(timed), timed_wall=wall, s_per_iter=float(per_iter))
    return info


def add_record(path, name, info):
    """Append ``info`` to ``name``'s list in the JSON file ``path``, re-reading the file first so
    that sweeps running side by side into one output root keep each other's records."""
    record = {}
    if os.path.exists(path):
        with open(path) as f:
            record = json.load(f)
    record.setdefault(name, []).append(info)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", nargs="+", default=None, help="default: configs/*/shapes_*.yaml")
    p.add_argument("--output-root", default="output/shapes")
    p.add_argument("--checkpoint-period", type=int, default=250)
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--bench-only", action="store_true")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=JSON:IMAGE_DIR")
    p.add_argument("--bench-args", default="", help="extra arguments for tools/benchmark.py")
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE for training and benchmark"
    )
    args = p.parse_args(argv)
    configs = args.configs or default_configs()
    root = os.path.abspath(args.output_root)
    record_path = os.path.join(root, "training.json")
    for config in configs:
        out_dir = os.path.join(root, run_name(config))
        if args.bench_only or os.path.exists(os.path.join(out_dir, "model_final.pth")):
            continue
        info = train(config, out_dir, args.opts, args.checkpoint_period, args.dataset)
        add_record(record_path, run_name(config), info)
    if args.train_only:
        return 0

    bench = [sys.executable, os.path.join(ROOT, "tools", "benchmark.py")]
    for d in args.dataset:
        bench += ["--register", d]
    done = 0
    for config in configs:
        weights = os.path.join(root, run_name(config), "model_final.pth")
        if not os.path.exists(weights):
            print(f"[compare_shapes] no {weights}: {config} left out of the table", flush=True)
            continue
        bench += ["--config-file", config, "--weights", weights, "--name", run_name(config)]
        done += 1
    if not done:
        sys.exit("[compare_shapes] no trained model to compare")
    bench += ["--output-dir", os.path.join(root, "benchmark")] + args.bench_args.split()
    if args.opts:
        bench += ["--opts"] + args.opts
    print("[compare_shapes] " + " ".join(bench), flush=True)
    return subprocess.call(bench, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
