#!/usr/bin/env python
"""FLOPs and CPU time of one training step (forward + backward) of shapes configs.

Used to size the CPU-sized Transfiner branches against the Mask R-CNN shapes baseline
(projects/Transfiner/README.md). FLOPs are counted by ``torch.utils.flop_counter`` (matrix
products and convolutions), so they do not depend on the load of the machine; the CPU time is
``time.process_time`` of the step (one thread), which does, a little.

    PYTHONPATH=. python tools/transfiner_train_cost.py configs/MaskRCNN/shapes_R_18_FPN.yaml \
        configs/Transfiner/shapes_R_18_FPN.yaml [--steps 3] [--opts KEY VALUE ...]

(``PYTHONPATH=.``: a script's own folder, not the working directory, heads ``sys.path``, so
without it the installed ``instseg_d2`` and no ``transfiner_d2`` of this checkout are found.)

Every config gets the same batch: 4 images of the training split at 128 px, same seed.
"""

import argparse
import time

import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch.utils.flop_counter import FlopCounterMode

from instseg_d2.benchmark.machine import describe_machine, machine_line
from instseg_d2.engine import Trainer, build_config


def measure(config_file: str, steps: int, opts) -> dict:
    cfg = build_config(config_file, ["SOLVER.IMS_PER_BATCH", "4", "INPUT.MIN_SIZE_TRAIN", "(128,)",
                                     "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"] + opts)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = next(iter(Trainer.build_train_loader(cfg)))
    with EventStorage():
        counter = FlopCounterMode(display=False)
        with counter:
            sum(model(batch).values()).backward()
        times = []
        for _ in range(steps):
            model.zero_grad()
            t = time.process_time()
            sum(model(batch).values()).backward()
            times.append(time.process_time() - t)
    return {"gflops": counter.get_total_flops() / 1e9, "cpu_s": sorted(times)[len(times) // 2]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE for all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {machine_line(describe_machine('cpu'))}; 1 thread, batch of 4 shapes images at 128 px\n"
    )
    print("| config | GFLOPs / training step | CPU s / step (median) |\n|---|---:|---:|")
    for cfg in args.configs:
        r = measure(cfg, args.steps, args.opts)
        print(f"| {cfg} | {r['gflops']:.1f} | {r['cpu_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
