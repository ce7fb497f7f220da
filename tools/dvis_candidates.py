#!/usr/bin/env python
"""Average number of DVIS candidates per image (paper Table 6: 4.15 on VOC, 14.83 on COCO), and
the share of the operations spent in discretization and verification (paper: about 2 %).

    python tools/dvis_candidates.py --config-file configs/DVIS/shapes_R_18.yaml \
        --weights output/dvis_shapes/model_final.pth [--dataset shapes_val] [--num-images N] \
        [--count-ops] [--extra-candidates N]

Runs the model's inference on the config's test set (the test-time resize of the config) and
prints the mean, median and range of the number of candidates that the discretization sends to
the verification (after filtering and de-duplication), in total and per mean-shift bandwidth,
and the mean number of GT instances per image for comparison.

With ``--count-ops`` the floating-point operations of every inference are counted per stage
(``instseg_d2.benchmark.count_stage_ops``: matrix products and convolutions as 2 per
multiply-add, every other op one per output element) and the totals over the images are printed
with each stage's share: the label-map network (backbone + decoder), ``discretization``
(mean-shift, connected components, filters) and ``verification`` (RoIAlign, the CNN, scoring).
``--extra-candidates N`` appends N small rectangles to each image's candidates
(``dvis_d2.add_rectangle_candidates``), e.g. to count the verification of a config at the
paper's candidate count without trained weights (``--weights ""``: random initialisation).
"""

import argparse
import contextlib
import statistics
import sys
from collections import defaultdict

import torch

from detectron2.data import DatasetCatalog, build_detection_test_loader

from dvis_d2 import add_rectangle_candidates
from instseg_d2.benchmark import count_stage_ops
from instseg_d2.utils.profiling import OUTSIDE
from instseg_d2.data import InstanceDatasetMapper
from instseg_d2.engine import build_config, load_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help='"": random initialisation')
    p.add_argument("--dataset", default="", help="default: the config's first test set")
    p.add_argument("--num-images", type=int, default=0, help="0: all")
    p.add_argument("--extra-candidates", type=int, default=0, help="rectangles added per image")
    p.add_argument("--count-ops", action="store_true", help="operations per stage (slower)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    opts = ["MODEL.WEIGHTS", args.weights] + list(args.opts)
    if args.dataset:
        opts += ["DATASETS.TEST", f"('{args.dataset}',)"]
    cfg = build_config(args.config_file, opts)
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "DVIS":
        sys.exit(f"{args.config_file}: MODEL.META_ARCHITECTURE is not DVIS")
    model = load_model(cfg, args.weights)
    if not args.weights:
        print("no --weights: a randomly initialised model")
    if args.extra_candidates:
        add_rectangle_candidates(model.discretizer, args.extra_candidates)
        print(f"{args.extra_candidates} rectangles added to each image's candidates")
    name = cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, name, mapper=InstanceDatasetMapper(cfg, False))
    gt = [len(d.get("annotations", [])) for d in DatasetCatalog.get(name)]
    n_bw = len(model.discretizer.bandwidths)
    total, per_bw = [], [[] for _ in range(n_bw)]
    ops = defaultdict(float)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if args.num_images and i >= args.num_images:
                break
            counting = count_stage_ops() if args.count_ops else contextlib.nullcontext({})
            with counting as counts:
                model.inference(batch, do_postprocess=False)
            for k, v in counts.items():
                ops[k] += v
            for bws in model.last_candidate_bandwidths:
                total.append(len(bws))
                for k in range(n_bw):
                    per_bw[k].append(int((bws == k).sum()))
    bws = model.discretizer.bandwidths
    print(f"dataset {name}: {len(total)} images, {statistics.mean(gt[: len(total)]):.2f} GT/image")
    print(
        f"candidates per image: mean {statistics.mean(total):.2f}, median "
        f"{statistics.median(total)}, min {min(total)}, max {max(total)}"
    )
    for k in range(n_bw):
        print(f"  from bandwidth {bws[k]}: mean {statistics.mean(per_bw[k]):.2f}")
    if ops:
        _print_ops(ops, len(total))


def _print_ops(ops, num_images: int):
    """Operations per image of each stage, and their shares of the total."""
    total = sum(ops.values())
    print("operations per image (matmul/conv 2 per multiply-add, others 1 per output element):")
    for name in [OUTSIDE] + sorted(k for k in ops if k != OUTSIDE):
        label = "label-map network and the rest" if name == OUTSIDE else name
        print(f"  {label}: {ops[name] / num_images / 1e9:.4f} G ({100 * ops[name] / total:.2f} %)")


if __name__ == "__main__":
    main()
