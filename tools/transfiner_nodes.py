#!/usr/bin/env python
"""How many quadtree nodes Mask Transfiner refines, and what an image costs.

    python tools/transfiner_nodes.py --config-file configs/Transfiner/shapes_R_18_FPN.yaml \
        --weights output/transfiner_shapes/model_final.pth [--num-images 3] [KEY VALUE ...]

Runs the model's inference on the first images of the config's test set (batch 1, the
test-time resize) and prints, per image, the wall time, the detections, the instances refined
and their nodes per quadtree level (28 / 56 / 112 for depth 3), then the means. The node count
sets the cost of the refinement: every instance's tokens (P x P context + its nodes) go through
the transformer together, so its attention grows with the square of that count.
"""

import argparse
import statistics
import time

import torch
from detectron2.data import build_detection_test_loader

from instseg_d2.data import InstanceDatasetMapper
from instseg_d2.engine import build_config, load_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help='"": random initialisation')
    p.add_argument("--num-images", type=int, default=3)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = build_config(args.config_file, ["MODEL.WEIGHTS", args.weights] + list(args.opts))
    cfg.freeze()
    if cfg.MODEL.ROI_MASK_HEAD.NAME != "TransfinerMaskHead":
        raise SystemExit(f"{args.config_file}: MODEL.ROI_MASK_HEAD.NAME is not TransfinerMaskHead")
    model = load_model(cfg, args.weights)
    refiner = model.roi_heads.mask_head.refiner
    name = cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, name, mapper=InstanceDatasetMapper(cfg, False))
    rows = []
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= args.num_images:
                break
            refiner.last_nodes = (0, [0] * refiner.depth)
            t0 = time.perf_counter()
            out = model(batch)
            seconds = time.perf_counter() - t0
            refined, nodes = refiner.last_nodes
            per_inst = [n / max(refined, 1) for n in nodes]
            rows.append((seconds, len(out[0]["instances"]), refined, per_inst))
            print(f"image {i}: {seconds:.1f} s, {rows[-1][1]} detections, {refined} refined, "
                  f"nodes per refined instance by level {[round(n) for n in per_inst]}")  # fmt: skip
    levels = [statistics.mean(r[3][k] for r in rows) for k in range(refiner.depth)]
    print(
        f"{name}, {len(rows)} images: {statistics.mean(r[0] for r in rows):.1f} s/image, "
        f"{statistics.mean(r[2] for r in rows):.1f} instances refined per image, nodes per "
        f"refined instance by level {[round(n) for n in levels]} (sum {round(sum(levels))})"
    )
    return rows


if __name__ == "__main__":
    main()
