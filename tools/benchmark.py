#!/usr/bin/env python
"""Compare models side by side on the same data and input size.

    python tools/benchmark.py --config-file configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml \
        --weights output/model_final.pth [--config-file B.yaml --weights B.pth ...] \
        [--input-size 800x1333] [--device cpu|cuda] [--iters 10] [--train-memory] \
        [--output-dir benchmark_out] [--opts KEY VALUE ...]

For each config (each in its own process): parameters, GFLOPs (fvcore), model-only and
end-to-end latency (median of --iters after --warmup), peak memory, optionally the peak memory
of one training step, and, when weights are given, COCO segm AP/AP50/AP75/APs/APm/APl and box
AP on the config's test set (or --dataset). Prints a markdown table naming the machine and
writes benchmark.csv, benchmark.json, benchmark.md and benchmark.png (AP vs latency).
Definitions: instseg_d2/benchmark/runner.py.
"""

import argparse
import json
import os
import sys

from instseg_d2.benchmark.machine import describe_machine, machine_line
from instseg_d2.benchmark.report import markdown_table, write_csv, write_plot
from instseg_d2.benchmark.runner import run_worker


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", action="append", required=True, help="repeatable")
    p.add_argument(
        "--weights", action="append", default=[],
        help="one per --config-file, in order ('' or '-' for none: no AP)",
    )  # fmt: skip
    p.add_argument("--name", action="append", default=[], help="row names (default: file name)")
    p.add_argument("--input-size", default="", help="HxW: every input resized to exactly this")
    p.add_argument("--dataset", default="", help="images (and AP) from this registered dataset")
    p.add_argument("--register", action="append", default=[], metavar="NAME=JSON:IMAGE_DIR")
    p.add_argument("--device", default="", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--num-images", type=int, default=10, help="distinct images for latency")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--no-eval", action="store_true", help="skip COCO AP even with weights")
    p.add_argument("--amp", action="store_true", help="inference under autocast (fp16 on CUDA)")
    p.add_argument("--train-memory", action="store_true", help="also one training step's memory")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--output-dir", default="benchmark_out")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE for all")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    weights = [("" if w in ("-", "") else w) for w in args.weights]
    if weights and len(weights) != len(args.config_file):
        sys.exit(f"--weights given {len(weights)} times for {len(args.config_file)} configs")
    weights += [""] * (len(args.config_file) - len(weights))
    names = args.name + [
        os.path.splitext(os.path.relpath(c, "configs"))[0] for c in args.config_file[len(args.name):]
    ]  # fmt: skip
    input_size = [int(v) for v in args.input_size.lower().split("x")] if args.input_size else None
    opts = list(args.opts)
    machine = describe_machine(device)
    rows = []
    for cfg_file, w, name in zip(args.config_file, weights, names):
        print(f"[benchmark] {name} ...", flush=True)
        spec = {
            "config_file": cfg_file, "weights": w, "device": device, "opts": opts,
            "input_size": input_size, "dataset": args.dataset, "num_images": args.num_images,
            "warmup": args.warmup, "iters": args.iters, "eval": not args.no_eval, "amp": args.amp,
            "register": args.register,
            "output_dir": os.path.join(args.output_dir, "runs", name.replace("/", "_")),
        }  # fmt: skip
        row = {"name": name, "config": cfg_file, "weights": w}
        row.update(run_worker(spec))
        if args.train_memory and "error" not in row:
            spec.update(mode="train_memory", train_batch=args.train_batch)
            row.update(run_worker(spec))
        rows.append(row)

    os.makedirs(args.output_dir, exist_ok=True)
    size = args.input_size or "each config's test size"
    header = (
        f"Machine: {machine_line(machine)}\nInput: {size}; latency = median of {args.iters} "
        f"runs after {args.warmup} warm-up, batch 1; AP on {args.dataset or 'each config’s test set'}"
    )
    table = markdown_table(rows)
    text = f"{header}\n\n{table}\n"
    print("\n" + text)
    with open(os.path.join(args.output_dir, "benchmark.md"), "w") as f:
        f.write(text)
    write_csv(rows, os.path.join(args.output_dir, "benchmark.csv"))
    with open(os.path.join(args.output_dir, "benchmark.json"), "w") as f:
        json.dump({"machine": machine, "args": vars(args), "rows": rows}, f, indent=1)
    if write_plot(rows, os.path.join(args.output_dir, "benchmark.png"), machine_line(machine)):
        print(f"plot: {os.path.join(args.output_dir, 'benchmark.png')}")
    return rows


if __name__ == "__main__":
    main()
