#!/usr/bin/env python
"""CPU cost of one training step (forward + backward + SGD) of each given config.

Measures process CPU time (not wall time) with one torch thread, so that the figure is
close to a quiet machine's even when other jobs share the cores. The batch is the first
``--batch`` images of the config's first training dataset through the platform's mapper;
the median over ``--steps`` steps after one warm-up step is printed.

    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/semiconv_step_cost.py \
        configs/MaskRCNN/shapes_R_18_FPN.yaml configs/SemiConv/shapes_R_18_FPN.yaml
"""

import argparse
import statistics
import time

import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from instseg_d2.benchmark.machine import describe_machine, machine_line
from instseg_d2.data.mapper import InstanceDatasetMapper
from instseg_d2.engine import build_config


def step_cost(config_file: str, batch: int, steps: int) -> float:
    """Median CPU seconds of one training step of ``config_file`` at ``batch`` images."""
    cfg = build_config(config_file, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    mapper = InstanceDatasetMapper(cfg, True)
    data = [mapper(d) for d in DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:batch]]
    times = []
    with EventStorage():
        for _ in range(steps + 1):
            start = time.process_time()
            loss = sum(model(data).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.process_time() - start)
    return statistics.median(times[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config_files", nargs="+")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine_line(describe_machine('cpu'))}")
    for f in args.config_files:
        print(
            f"{f}: median CPU s/step (batch {args.batch}) {step_cost(f, args.batch, args.steps):.3f}"
        )


if __name__ == "__main__":
    main()
