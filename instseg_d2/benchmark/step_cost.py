"""Cost of training steps (forward + backward + optimizer step) of a config, on given batches.

:func:`draw_batches` draws batches from a config's training set through the project's mapper
with a fixed seed, so that every config given the same input settings gets the same images,
the same augmentations and the same instances. :func:`measure_train_steps` builds the model
from the same initialisation seed, runs warm-up steps and then timed steps in one torch thread,
and returns a :class:`StepCost`: per step the process CPU time (``time.process_time``, which
depends much less than the wall time on the other users of a shared machine) and the wall time;
optionally the CPU time of the forward passes of parts of the model and of backward + step, and
the FLOPs of one step (``torch.utils.flop_counter``: matrix products and convolutions, forward
and backward, independent of the machine's load). ``tools/step_cost.py`` is the command line
(:mod:`.step_cost_cli`).
"""

import random
import statistics
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import get_detection_dataset_dicts
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch.utils.flop_counter import FlopCounterMode

from ..data import InstanceDatasetMapper
from ..engine import build_optimizer
from ..utils.rng import preserved_rng
from ..utils.profiling import sync_cuda

Batch = List[dict]


@dataclass
class StepCost:
    """What :func:`measure_train_steps` measured (seconds, per timed step, in order).

    Attributes:
        cpu_s: process CPU seconds of each timed step (forward + backward + optimizer step).
        wall_s: wall-clock seconds of each timed step.
        breakdown: mean process CPU seconds per timed step of the forward pass of each timed
            part (named by its module path, e.g. ``"backbone"``), of the whole forward pass
            (``"forward"``) and of backward + optimizer step (``"backward+step"``); empty unless
            asked for. Parts nested in one another are each counted whole.
        flops: FLOPs of one step (forward + backward) on the first batch; None unless asked for.
        scalars: per timed step, the scalars the model put into the event storage during that
            step (e.g. DVIS's ``"dvis/num_candidates"``).
    """

    cpu_s: List[float]
    wall_s: List[float]
    breakdown: Dict[str, float] = field(default_factory=dict)
    flops: Optional[int] = None
    scalars: List[Dict[str, float]] = field(default_factory=list)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def cpu_mean(self) -> float:
        return statistics.mean(self.cpu_s)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def wall_mean(self) -> float:
        return statistics.mean(self.wall_s)

    def scalar_mean(self, name: str) -> Optional[float]:
        """Mean over the timed steps that logged scalar ``name``; None if none did."""
        vals = [s[name] for s in self.scalars if name in s]
        return statistics.mean(vals) if vals else None


def draw_batches(cfg: CfgNode, batch_size: int, num_batches: int, seed: int = 0) -> List[Batch]:
    """``num_batches`` training batches of ``batch_size`` images, the same for the same seed.

    The images of ``cfg.DATASETS.TRAIN`` (empty ones dropped when
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``, as in training) are shuffled with ``seed`` (then
    again when more images are needed than there are) and mapped by
    :class:`InstanceDatasetMapper` in training mode, its random augmentations drawing from
    numpy's and Python's generators seeded with ``seed`` (their states are restored afterwards).
    Two configs with the same data and ``INPUT`` settings therefore get identical batches.

    Returns:
        ``num_batches`` lists of ``batch_size`` mapped dicts (``image`` (C, H, W) uint8,
        ``instances``, ``height``, ``width``, ...), as a training data loader yields them.
    """
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    mapper = InstanceDatasetMapper(cfg, True)
    gen = torch.Generator().manual_seed(seed)
    order: List[int] = []
    while len(order) < batch_size * num_batches:
        order += torch.randperm(len(dicts), generator=gen).tolist()
    with _seeded_global_rngs(seed):
        mapped = [mapper(dicts[i]) for i in order[: batch_size * num_batches]]
    return [mapped[k * batch_size : (k + 1) * batch_size] for k in range(num_batches)]


def measure_train_steps(
    cfg: CfgNode,
    batches: Sequence[Batch],
    steps: int,
    warmup: int = 1,
    breakdown: Union[bool, Sequence[str]] = False,
    flops: bool = False,
    model_hook: Optional[Callable[[torch.nn.Module], None]] = None,
    seed: int = 0,
    threads: int = 1,
) -> StepCost:
    """Build ``cfg``'s model and time ``warmup`` + ``steps`` training steps on ``batches``.

    The model is built on ``cfg.MODEL.DEVICE`` after ``torch.manual_seed(seed)``, then passed to
    ``model_hook`` (e.g. to instrument it). The optimizer is the training's
    (:func:`instseg_d2.engine.build_optimizer`: SGD or AdamW, clipping, per-group factors) at the
    learning rate of the first training iteration (``BASE_LR x WARMUP_FACTOR`` when
    ``WARMUP_ITERS > 0``), so that a few steps from a random initialisation stay near it, as at
    the start of training. Step ``i`` uses ``batches[i % len(batches)]`` (one batch: the same
    every step) in an :class:`EventStorage`; the first ``warmup`` steps are not timed.

    Args:
        breakdown: True: time the forward pass of each top-level child of the model; a
            sequence of module paths (``"roi_heads.mask_head"``): those modules.
        flops: count the FLOPs of the first warm-up step (needs ``warmup >= 1``).
        threads: torch intra-op threads during the measurement (restored afterwards).
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"need steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    if flops and warmup < 1:
        raise ValueError("flops are counted in the first warm-up step: need warmup >= 1")
    torch.manual_seed(seed)
    model = build_model(cfg)
    model.train()
    if model_hook is not None:
        model_hook(model)
    optimizer = build_optimizer(cfg, model)
    if cfg.SOLVER.WARMUP_ITERS > 0:
        for group in optimizer.param_groups:
            group["lr"] *= cfg.SOLVER.WARMUP_FACTOR
    if breakdown is True:
        breakdown = [name for name, _ in model.named_children()]
    parts = {name: model.get_submodule(name) for name in (breakdown or ())}
    cost = StepCost([], [])
    if parts:
        cost.breakdown = dict.fromkeys([*parts, "forward", "backward+step"], 0.0)
    totals: Dict[str, float] = {}
    counter = FlopCounterMode(display=False) if flops else None
    with _num_threads(threads), _cpu_time_of_forward(parts, totals), EventStorage(0) as storage:
        for i in range(warmup + steps):
            storage.iter = i
            totals.clear()
            batch = list(batches[i % len(batches)])
            with counter if (counter is not None and i == 0) else nullcontext():
                c0, w0 = time.process_time(), time.perf_counter()
                losses = model(batch)
                c1 = time.process_time()
                optimizer.zero_grad()
                sum(losses.values()).backward()
                optimizer.step()
                sync_cuda()  # CUDA, if the model is on it
                c2, w2 = time.process_time(), time.perf_counter()
            if i < warmup:
                continue
            cost.cpu_s.append(c2 - c0)
            cost.wall_s.append(w2 - w0)
            if parts:
                totals.update({"forward": c1 - c0, "backward+step": c2 - c1})
                for name, value in totals.items():
                    cost.breakdown[name] += value / steps
            cost.scalars.append(_scalars_of_iteration(storage, i))
    if counter is not None:
        cost.flops = int(counter.get_total_flops())
    return cost


def _scalars_of_iteration(storage: EventStorage, it: int) -> Dict[str, float]:
    return {
        name: float(value)
        for name, history in storage.histories().items()
        for value, i in history.values()
        if i == it
    }


@contextmanager
def _cpu_time_of_forward(parts: Dict[str, torch.nn.Module], totals: Dict[str, float]):
    """Add the process CPU seconds of each forward pass of ``parts[name]`` to ``totals[name]``."""
    handles = []
    for name, module in parts.items():
        starts: List[float] = []  # a stack: a module may be called inside its own call

        def before(*_, starts=starts):
            starts.append(time.process_time())

        def after(*_, name=name, starts=starts):
            totals[name] = totals.get(name, 0.0) + time.process_time() - starts.pop()

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _seeded_global_rngs(seed: int) -> Iterator[None]:
    with preserved_rng():
        np.random.seed(seed)
        random.seed(seed)
        yield


@contextmanager
def _num_threads(n: int) -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)
