#!/usr/bin/env python
"""CPU cost of one training step (forward + backward + optimizer step) of configs, side by side.

Every config trains on the SAME batches (drawn from its training set through the project's
mapper with a fixed seed; a note is printed when a config's data or input settings make them
differ from the first config's), from the same initialisation seed, with the training's optimizer
at its first-iteration learning rate, in one torch thread. After ``--warmup`` untimed steps,
``--steps`` steps are timed; per config one line gives the median and mean process CPU time per
step (``time.process_time``: on a shared machine it depends much less on the other users than
the wall time, which is given too) and its ratio to the first config's median. Options:

* ``--breakdown``: CPU time of the forward pass of each top-level part of the model (e.g.
  backbone, proposal_generator, roi_heads), of the whole forward and of backward + step;
  ``--breakdown roi_heads.box_head roi_heads.mask_head``: of those modules instead;
* ``--flops``: FLOPs of one step (forward + backward, counted by ``torch.utils.flop_counter``:
  matrix products and convolutions; independent of the machine's load), on the first batch;
* ``--extra-candidates N``: DVIS configs only (others are timed as they are): N small
  rectangles per image are added to the candidates of the discretization, so that the
  verification head's cost at a realistic (mid-training) candidate count is measured;
* ``--scalar NAME``: the mean of a scalar that the model logs during training (e.g.
  ``dvis/num_candidates``, printed anyway with ``--extra-candidates``).

Definitions: ``instseg_d2/benchmark/step_cost.py``. Examples (``PYTHONPATH=.``: the packages of
this checkout, when the installed ones are another checkout's):

    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/step_cost.py \\
        --config-file configs/MaskRCNN/shapes_R_18_FPN.yaml \\
        --config-file configs/MaskLab/shapes_R_18_FPN.yaml --steps 6 --warmup 1 --breakdown
    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/step_cost.py \\
        --config-file configs/MaskRCNN/shapes_R_18_FPN.yaml \\
        --config-file configs/Transfiner/shapes_R_18_FPN.yaml --flops \\
        --opts MODEL.TRANSFINER.NUM_LAYERS 1
    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/step_cost.py \\
        --config-file configs/MaskRCNN/shapes_R_18_FPN.yaml \\
        --config-file configs/DVIS/shapes_R_18.yaml --extra-candidates 60
"""

import argparse
import os
from typing import List, Tuple

import torch

from instseg_d2.benchmark.machine import describe_machine, machine_line
from instseg_d2.benchmark.step_cost import StepCost, draw_batches, measure_train_steps
from instseg_d2.engine import build_config

CANDIDATES = "dvis/num_candidates"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", action="append", required=True, help="repeatable")
    p.add_argument("--batch", type=int, default=0, help="default: the first config's batch")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    p.add_argument("--seed", type=int, default=0, help="of the batches and of the weights")
    p.add_argument("--breakdown", nargs="*", metavar="MODULE", help="alone: top-level parts")
    p.add_argument("--flops", action="store_true")
    p.add_argument("--extra-candidates", type=int, default=0, help="DVIS: rectangles/image")
    p.add_argument("--scalar", action="append", default=[], help="logged scalar to average")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE for all")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 0 or args.extra_candidates < 0:
        p.error("need --steps >= 1 and --warmup, --batch, --extra-candidates >= 0")
    if args.flops and args.warmup < 1:
        p.error("--flops counts the first warm-up step: needs --warmup >= 1")
    args.cfgs = [build_config(f, ["MODEL.DEVICE", "cpu"] + args.opts) for f in args.config_file]
    dvis = [c.MODEL.META_ARCHITECTURE == "DVIS" for c in args.cfgs]
    if args.extra_candidates and not any(dvis):
        p.error("--extra-candidates needs a config whose MODEL.META_ARCHITECTURE is DVIS")
    return args


def main(argv=None) -> List[Tuple[str, StepCost]]:
    """Measure and print every config; return ``(config file, StepCost)`` in order."""
    args = parse_args(argv)
    batch = args.batch or args.cfgs[0].SOLVER.IMS_PER_BATCH
    scalars = args.scalar + ([CANDIDATES] if args.extra_candidates else [])
    info = dict(describe_machine(args.cfgs[0].MODEL.DEVICE), torch_threads=1)  # as measured
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {machine_line(info)}; load average {load}")
    print(
        f"batch {batch}, {args.steps} timed steps after {args.warmup} warm-up, seed {args.seed}; "
        f"CPU s = process time per step; overrides for all: {' '.join(args.opts) or 'none'}"
    )
    rows, first = [], None
    for config_file, cfg in zip(args.config_file, args.cfgs):
        batches = draw_batches(cfg, batch, args.warmup + args.steps, args.seed)
        cost = measure_train_steps(
            cfg,
            batches,
            args.steps,
            args.warmup,
            breakdown=True if args.breakdown == [] else (args.breakdown or False),
            flops=args.flops,
            model_hook=_model_hook(cfg, args.extra_candidates),
            seed=args.seed,
        )
        first = first or (batches, cost)
        print(_line(config_file, cost, first[1], scalars), flush=True)
        if not _same_images(batches, first[0]):
            print("    (batches differ from the first config's: other data or INPUT settings)")
        if args.extra_candidates and cfg.MODEL.META_ARCHITECTURE != "DVIS":
            print("    (not DVIS: no extra candidates)")
        if cost.breakdown:
            print("    CPU s/step: " + ", ".join(f"{k} {v:.3f}" for k, v in cost.breakdown.items()))
        rows.append((config_file, cost))
    return rows


def _model_hook(cfg, extra_candidates: int):
    """DVIS with ``--extra-candidates``: add the rectangles to its discretizer's output."""
    if not extra_candidates or cfg.MODEL.META_ARCHITECTURE != "DVIS":
        return None
    from dvis_d2 import add_rectangle_candidates

    return lambda model: add_rectangle_candidates(model.discretizer, extra_candidates)


def _line(config_file: str, cost: StepCost, first: StepCost, scalars: List[str]) -> str:
    out = (
        f"{config_file}: CPU s/step median {cost.cpu_median:.3f}, mean {cost.cpu_mean:.3f} "
        f"({cost.cpu_median / first.cpu_median:.2f}x the first); "
        f"wall s/step median {cost.wall_median:.3f}, mean {cost.wall_mean:.3f}"
    )
    if cost.flops is not None:
        out += f"; {cost.flops / 1e9:.1f} GFLOPs/step ({cost.flops / first.flops:.2f}x)"
    for name in scalars:
        mean = cost.scalar_mean(name)
        if mean is not None:
            out += f"; {name} {mean:.1f}"
    return out


def _same_images(a, b) -> bool:
    return all(
        x["image"].shape == y["image"].shape and torch.equal(x["image"], y["image"])
        for ba, bb in zip(a, b)
        for x, y in zip(ba, bb)
    )


if __name__ == "__main__":
    main()
