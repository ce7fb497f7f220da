#!/usr/bin/env python
"""Compare every method head to head: the project's comparison protocol, end to end.

    python tools/compare.py [--output-root output/compare] [--seeds 0 1] [--jobs 2]
        [--configs configs/A/shapes_x.yaml ...] [--variant default|stress]
        [--dataset NAME=JSON:IMAGE_DIR ...] [--device cpu|cuda] [--report-only]
        [--report-dir DIR] [--no-bench] [--opts KEY VALUE ...]

1. Builds the shared pretrained backbone once (cached; see ``instseg_d2/pretrain.py``) if the
   configs use it.
2. Trains every config (default: ``configs/*/shapes_*.yaml``, Mask R-CNN first) with every seed
   through ``train_net.py --resume`` into ``<output-root>/runs/<model>_seed<s>``, ``--jobs`` at a
   time with ``--threads`` torch threads each. Finished runs (their ``result.json``) are never
   trained again, interrupted ones continue from their last checkpoint: the sweep can span
   several sittings (``touch <output-root>/STOP`` ends a sitting: no run starts after it, the
   running ones finish and are reported). The configs evaluate every ``TEST.EVAL_PERIOD``
   iterations: the curve and the final AP of each run go to the report as soon as it ends.
3. With nothing else running, measures each model once (seed of its first run): parameters,
   GFLOPs, CPU time and wall time per image (1 thread, end to end), peak memory.
4. Writes ``<report-dir>`` (default ``<output-root>/report``): ``comparison.md`` (mean and range
   over seeds per model, the plateau check, each method's recipe), ``comparison.csv`` (one row per
   model and seed), ``curves.png`` (AP vs iteration), ``ap_vs_latency.png`` and
   ``predictions.png`` (every model on the same 4 validation images), and the records the report
   is made of: ``runs/`` (each finished run's metrics, curve, minutes and grid predictions) and
   ``bench/`` (each model's cost). A run with a record there is finished: a sweep continues on
   another machine from the report folder alone.

``--variant stress`` trains on the harder shapes splits (``shapes_train``/``shapes_val``: more,
smaller, occluded shapes on busier backgrounds). ``--dataset`` runs the same comparison on any
COCO-format data: the first ``--dataset`` is the training set, the last the test set.
``--device cuda`` trains with AMP. ``--tag NAME --opts KEY VALUE ...`` trains a variant (an
ablation) next to the default runs in the same output root, reported as its own rows.
"""

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRESS = ["DATASETS.TRAIN", "('shapes_train',)", "DATASETS.TEST", "('shapes_val',)"]


def default_configs():
    found = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "shapes_*.yaml")))
    found = [os.path.relpath(c, ROOT) for c in found]
    return sorted(found, key=lambda c: (not c.startswith("configs/MaskRCNN/"), c))


def model_name(config: str) -> str:
    """``configs/SOLO/shapes_SOLOv2_R_18.yaml`` -> ``SOLOv2_R_18``."""
    stem = os.path.splitext(os.path.basename(config))[0]
    return stem[len("shapes_") :] if stem.startswith("shapes_") else stem


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", nargs="+", default=None, help="default: configs/*/shapes_*.yaml")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--output-root", default="output/compare")
    p.add_argument("--report-dir", default="", help="default: <output-root>/report")
    p.add_argument("--variant", choices=("default", "stress"), default="default")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=JSON:IMAGE_DIR")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--jobs", type=int, default=0, help="trainings at a time (cpu: 2, cuda: 1)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per training")
    p.add_argument("--report-only", action="store_true", help="train nothing")
    p.add_argument("--no-bench", action="store_true", help="no latency / memory / GFLOPs")
    p.add_argument("--grid-images", type=int, default=4)
    p.add_argument(
        "--tag",
        default="",
        help="a variant's name: model rows 'M [TAG]', runs '<model>-TAG_seed<s>'",
    )
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE for all runs")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from instseg_d2.benchmark import compare

    configs = args.configs or default_configs()
    return compare.main(
        args, configs, model_name, ROOT, STRESS, [sys.argv[0]] + list(argv or sys.argv[1:])
    )


if __name__ == "__main__":
    sys.exit(main())
