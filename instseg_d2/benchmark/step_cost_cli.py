"""The command line of training-step costs, side by side: ``tools/step_cost.py``'s options and
its report, for that tool and for method diagnostics that instrument the model they time (e.g.
``python -m dvis_d2.diagnostics step-cost``). Definitions: :mod:`.step_cost`."""

import argparse
import os
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode

from ..engine import build_config
from .machine import describe_machine, machine_line
from .step_cost import StepCost, draw_batches, measure_train_steps

# cfg -> what to do to its freshly built model before it is timed (None: nothing)
ModelHookFor = Callable[[CfgNode], Optional[Callable[[torch.nn.Module], None]]]


def add_step_cost_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every step-cost command line."""
    p.add_argument("--config-file", action="append", required=True, help="repeatable")
    p.add_argument("--batch", type=int, default=0, help="default: the first config's batch")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    p.add_argument("--seed", type=int, default=0, help="of the batches and of the weights")
    p.add_argument("--breakdown", nargs="*", metavar="MODULE", help="alone: top-level parts")
    p.add_argument("--flops", action="store_true")
    p.add_argument("--scalar", action="append", default=[], help="logged scalar to average")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE for all")


def parse_step_cost_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse and check ``argv``; ``args.cfgs`` holds the configs (on the CPU, not frozen)."""
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 0:
        p.error("need --steps >= 1 and --warmup, --batch >= 0")
    if args.flops and args.warmup < 1:
        p.error("--flops counts the first warm-up step: needs --warmup >= 1")
    args.cfgs = [build_config(f, ["MODEL.DEVICE", "cpu"] + args.opts) for f in args.config_file]
    return args


def run_step_costs(
    args: argparse.Namespace,
    model_hook_for: Optional[ModelHookFor] = None,
    scalars: Sequence[str] = (),
) -> List[Tuple[str, StepCost]]:
    """Measure every config of ``args`` (:func:`parse_step_cost_args`) and print one line each
    (ratios to the first); return ``(config file, StepCost)`` in order.

    Args:
        model_hook_for: gives, per config, what to apply to its model before the steps.
        scalars: logged scalars to average and print, besides ``--scalar``.
    """
    batch = args.batch or args.cfgs[0].SOLVER.IMS_PER_BATCH
    scalars = list(args.scalar) + [s for s in scalars if s not in args.scalar]
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
            model_hook=model_hook_for(cfg) if model_hook_for else None,
            seed=args.seed,
        )
        first = first or (batches, cost)
        print(_line(config_file, cost, first[1], scalars), flush=True)
        if not _same_images(batches, first[0]):
            print("    (batches differ from the first config's: other data or INPUT settings)")
        if cost.breakdown:
            print("    CPU s/step: " + ", ".join(f"{k} {v:.3f}" for k, v in cost.breakdown.items()))
        rows.append((config_file, cost))
    return rows


def _line(config_file: str, cost: StepCost, first: StepCost, scalars: Sequence[str]) -> str:
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
