"""Optional timing and operation counts of named stages inside a model (e.g. DVIS
discretization).

Model code marks a stage with ``with stage("name"):``; this costs nothing unless a caller (the
benchmark, a diagnostic) is recording. Under :func:`record_stages` the wall time of each stage is summed per forward
pass, with CUDA synchronisation around it; under :func:`count_stage_ops` the floating-point
operations of each stage, and of everything outside the stages, are counted.
"""

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

_active: Optional[Dict[str, float]] = None  # stage times while record_stages() is active
_counting = False  # True while count_stage_ops() is active
_stage_stack: List[str] = []
OUTSIDE = "(outside stages)"


@contextmanager
def stage(name: str):
    """Time the enclosed block as stage ``name`` when recording; otherwise do nothing."""
    if _counting:
        _stage_stack.append(name)
        try:
            yield
        finally:
            _stage_stack.pop()
        return
    if _active is None:
        yield
        return
    sync_cuda()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        sync_cuda()
        _active[name] += time.perf_counter() - t0


@contextmanager
def record_stages():
    """Collect stage times (seconds) into the yielded dict for the enclosed forward pass."""
    global _active
    prev, _active = _active, defaultdict(float)
    try:
        yield _active
    finally:
        _active = prev


def sync_cuda() -> None:
    """Wait for the CUDA work queued so far, if CUDA is in use (a no-op otherwise)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _OpCounter(TorchDispatchMode):
    """Counts the operations of every aten call, into the innermost active stage.

    Matrix products and convolutions count as ``torch.utils.flop_counter`` does (2 per
    multiply-add); every other call with a floating-point output counts one operation per output
    element (element-wise arithmetic, reductions, RoIAlign samples, ...). Integer and boolean
    outputs (indices, masks, comparisons of connected-component labels) count nothing.
    """

    def __init__(self, counts: Dict[str, float]):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            n = flop_registry[packet](*args, **kwargs, out_val=out)
        else:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            n = sum(
                o.numel() for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()
            )
        self.counts[_stage_stack[-1] if _stage_stack else OUTSIDE] += float(n)
        return out


@contextmanager
def count_stage_ops():
    """Count the operations of the enclosed block per stage (see :class:`_OpCounter`).

    Yields a dict ``{stage name or OUTSIDE: operations}``, filled when the block exits; nested
    stages are counted in the innermost one.
    """
    global _counting
    counts: Dict[str, float] = defaultdict(float)
    prev, _counting = _counting, True
    try:
        with _OpCounter(counts):
            yield counts
    finally:
        _counting = prev
