#!/usr/bin/env python
"""Seconds per training step (forward + backward + SGD step) of a config on its training set.

    OMP_NUM_THREADS=1 python tools/dvis_step_time.py --config-file configs/DVIS/shapes_R_18.yaml \
        --extra-candidates 60 [--steps 6] [KEY VALUE ...]
    OMP_NUM_THREADS=1 python tools/dvis_step_time.py \
        --config-file configs/MaskRCNN/shapes_R_18_FPN.yaml

A freshly initialised DVIS model yields almost no candidates, whereas mid-training it yields
20-40 per image; the cost of its verification head grows with that number. For DVIS configs,
``--extra-candidates N`` adds N small rectangular candidates per image to those of the
discretization, so that the step cost at a realistic candidate count can be measured without
training. Any other meta-architecture is timed as it is (e.g. Mask R-CNN, for the ratio). Prints
each step's time and the mean over the steps after the first; one thread (set
``OMP_NUM_THREADS=1``) and the batch size of the config.
"""

import argparse
import os
import sys
import time

import torch

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from instseg_d2.benchmark.machine import describe_machine, machine_line
from instseg_d2.data import InstanceDatasetMapper
from instseg_d2.engine import build_config


def _add_rectangles(discretizer, n: int):
    """Wrap ``discretizer.forward`` so that it also returns ``n`` rectangles per image."""
    from dvis_d2 import Candidates

    real = discretizer.forward

    def forward(f, valid):
        out = []
        g = torch.Generator().manual_seed(1)
        for c, v in zip(real(f, valid), valid):
            h, w = v.shape
            m = torch.zeros(n, h, w, dtype=torch.bool, device=f.device)
            for i in range(n):
                y0 = int(torch.randint(0, max(h - 8, 1), (1,), generator=g))
                x0 = int(torch.randint(0, max(w - 8, 1), (1,), generator=g))
                m[i, y0 : y0 + 3 + i % 6, x0 : x0 + 3 + (i * 7) % 6] = True
            k = torch.zeros(n, dtype=torch.long, device=f.device)
            out.append(Candidates.cat([c, Candidates(m, k.float() + 1, k)]))
        return out

    discretizer.forward = forward


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--steps", type=int, default=6, help="timed steps (the first is not averaged)")
    p.add_argument("--extra-candidates", type=int, default=0, help="DVIS only: rectangles/image")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error(f"--steps must be >= 2, got {args.steps}")
    cfg = build_config(args.config_file, ["MODEL.DEVICE", "cpu"] + list(args.opts))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    if args.extra_candidates:
        if cfg.MODEL.META_ARCHITECTURE != "DVIS":
            p.error(f"--extra-candidates needs a DVIS config, not {cfg.MODEL.META_ARCHITECTURE}")
        _add_rectangles(model.discretizer, args.extra_candidates)
    mapper = InstanceDatasetMapper(cfg, True)
    data = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    bs = cfg.SOLVER.IMS_PER_BATCH
    opt = torch.optim.SGD(model.parameters(), lr=cfg.SOLVER.BASE_LR * 0.1, momentum=0.9)
    times = []
    with EventStorage() as storage:
        for it in range(args.steps):
            batch = [mapper(data[(it * bs + j) % len(data)]) for j in range(bs)]
            t0 = time.perf_counter()
            loss = sum(model(batch).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            cand = storage.latest().get("dvis/num_candidates")
            extra = f", {cand[0]:.1f} candidates/image" if cand else ""
            print(f"step {it}: {times[-1]:.3f} s{extra}", flush=True)
    mean = sum(times[1:]) / (len(times) - 1)
    print(f"machine: {machine_line(describe_machine('cpu'))}; load average {os.getloadavg()}")
    print(f"{args.config_file} {' '.join(args.opts)}: {mean:.3f} s/step (mean of steps 1..)")


if __name__ == "__main__":
    main()
