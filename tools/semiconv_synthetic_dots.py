#!/usr/bin/env python
"""The synthetic experiment of Novotny et al. (ECCV 2018, sec. 4.1): identical dots on a grid.

    python tools/semiconv_synthetic_dots.py [--iters 300] [--grid 5] [--output-dir DIR]

The same CNN is trained with the embedding loss (eq. 5) to give convolutional embeddings
Phi_u or semi-convolutional ones Psi_u = Phi_u + u; the foreground embeddings of held-out
images are clustered by k-means with K = the true number of dots and compared with the
ground-truth instances by the adjusted Rand index (1 = perfect, ~0 = random). Prints a markdown
table and the machine; with --output-dir writes results.json and clusters.png (per test image:
ground truth | convolutional | semi-convolutional clusters). Definitions: semiconv_d2/synthetic.py.
"""

import argparse
import json
import os
import time

import numpy as np
import torch

from instseg_d2.benchmark.machine import describe_machine, machine_line
from semiconv_d2.synthetic import DotsSpec, make_dots, run_experiment


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    d = DotsSpec()
    p.add_argument("--size", type=int, default=d.size, help="image side (pixels)")
    p.add_argument("--grid", type=int, default=d.grid, help="dots per row / column")
    p.add_argument("--spacing", type=int, default=d.spacing, help="dot pitch (pixels)")
    p.add_argument("--radius", type=float, default=d.radius, help="dot radius (pixels)")
    p.add_argument("--iters", type=int, default=300, help="SGD iterations (batch 8)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--num-train", type=int, default=64)
    p.add_argument("--num-test", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--output-dir", default="")
    return p.parse_args(argv)


def _palette(labels: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 256, size=(labels.max() + 2, 3), dtype=np.uint8)
    colours[0] = 0  # background (-1)
    return colours[labels + 1]


def save_clusters(path: str, spec: DotsSpec, maps: dict, seed: int, num: int = 3) -> None:
    from PIL import Image

    _, inst = make_dots(spec, len(maps["conv"]), seed + 1)
    rows = []
    for i in range(min(num, len(inst))):
        gt = inst[i].numpy() - 1
        row = [_palette(gt), _palette(maps["conv"][i]), _palette(maps["semiconv"][i])]
        sep = np.full((spec.size, 2, 3), 255, dtype=np.uint8)
        rows.append(np.concatenate([row[0], sep, row[1], sep, row[2]], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).resize(
        (rows[0].shape[1] * 3, len(rows) * spec.size * 3), Image.NEAREST
    ).save(path)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = DotsSpec(args.size, args.grid, args.spacing, args.radius)
    t0 = time.perf_counter()
    results, maps = run_experiment(
        spec, args.iters, args.num_train, args.num_test, args.seed, args.lr
    )
    seconds = time.perf_counter() - t0
    machine = machine_line(describe_machine("cpu"))
    print(f"dots: {spec}, {args.iters} iterations, {args.num_test} test images, {seconds:.0f} s")
    print(f"machine: {machine}\n")
    print("| embedding | loss first -> last | ARI before training | ARI mean | ARI min |")
    print("|---|---|---|---|---|")
    for name, label in (("conv", "convolutional Phi_u"), ("semiconv", "semi-conv Psi_u")):
        r = results[name]
        print(
            f"| {label} | {r['loss_first']:.4f} -> {r['loss_last10']:.4f} | "
            f"{r['ari_mean_init']:.3f} | {r['ari_mean']:.3f} | {r['ari_min']:.3f} |"
        )
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump({"args": vars(args), "machine": machine, "results": results}, f, indent=1)
        save_clusters(os.path.join(args.output_dir, "clusters.png"), spec, maps, args.seed)
    return results


if __name__ == "__main__":
    main()
