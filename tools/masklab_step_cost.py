#!/usr/bin/env python
"""CPU cost of one training step (forward + backward + SGD step) of shapes configs, side by side.

Every config trains on the SAME batches (drawn once from its training split with the project's
mapper and a fixed seed), from the same random initialisation seed, in one thread. The figure is
the process CPU time per step (``time.process_time``): on a shared machine it depends much less on
the other users than the wall time, which is printed too. With ``--breakdown``, the CPU time of
the forward passes of the top-level parts (backbone, RPN, box branch, mask branch) and of the
whole backward + step is printed as well.

Example (the figures of projects/MaskLab/README.md):

    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/masklab_step_cost.py \
        --config-file configs/MaskRCNN/shapes_R_18_FPN.yaml \
        --config-file configs/MaskLab/shapes_R_18_FPN.yaml --iters 4 --warmup 1 --breakdown
"""

import argparse
import itertools
import time
from collections import defaultdict

import torch


def _batches(cfg, n):
    from instseg_d2.engine import Trainer

    torch.manual_seed(0)
    loader = Trainer.build_train_loader(cfg)
    return list(itertools.islice(iter(loader), n))


def _timed_parts(model, totals):
    """Forward hooks adding the CPU time of the model's main parts to ``totals``."""
    parts = {"backbone": model.backbone, "rpn": model.proposal_generator}
    heads = model.roi_heads
    for name in ("box_head", "box_predictor", "mask_head"):
        if getattr(heads, name, None) is not None:
            parts[name] = getattr(heads, name)
    for name, module in parts.items():
        _time_forward(module, name, totals)


def _time_forward(module, name, totals):
    start = []

    def before(*_):
        start.append(time.process_time())

    def after(*_):
        totals[name] += time.process_time() - start.pop()

    module.register_forward_pre_hook(before)
    module.register_forward_hook(after)


def measure(config_file, opts, batches, iters, warmup, breakdown):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from instseg_d2.engine import Trainer, build_config

    cfg = build_config(config_file, ["MODEL.DEVICE", "cpu"] + list(opts))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    optimizer = Trainer.build_optimizer(cfg, model)
    totals = defaultdict(float)
    if breakdown:
        _timed_parts(model, totals)
    cpu, wall = [], []
    with EventStorage(0):
        for i, batch in enumerate(batches[: warmup + iters]):
            c0, w0 = time.process_time(), time.perf_counter()
            losses = model(batch)
            c1 = time.process_time()
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            c2, w2 = time.process_time(), time.perf_counter()
            if breakdown:
                totals["backward+step"] += c2 - c1
            if i < warmup:
                totals.clear()  # warm-up steps are not counted
                continue
            cpu.append(c2 - c0)
            wall.append(w2 - w0)
    n = len(cpu)
    parts = {k: v / n for k, v in totals.items()}
    return sum(cpu) / n, sum(wall) / n, parts


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", action="append", required=True)
    p.add_argument("--iters", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="overrides for all")
    args = p.parse_args()
    torch.set_num_threads(1)

    from instseg_d2.benchmark.machine import describe_machine, machine_line
    from instseg_d2.engine import build_config

    cfg0 = build_config(args.config_file[0], ["MODEL.DEVICE", "cpu"] + list(args.opts))
    batches = _batches(cfg0, args.warmup + args.iters)
    print(machine_line(describe_machine("cpu")))
    print(f"batch {cfg0.SOLVER.IMS_PER_BATCH}, {args.iters} steps after {args.warmup} warm-up, "
          f"1 thread; CPU s = process time per step")  # fmt: skip
    rows = []
    for cf in args.config_file:
        rows.append((cf, *measure(cf, args.opts, batches, args.iters, args.warmup, args.breakdown)))
    base = rows[0][1]
    for cf, c, w, parts in rows:
        print(f"{cf}: {c:.3f} CPU s/step ({c / base:.2f}x the first), wall {w:.3f} s/step")
        if parts:
            print("    " + ", ".join(f"{k} {v:.3f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
