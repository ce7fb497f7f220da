"""Optional timing of named stages inside a model (e.g. DVIS discretization).

Model code marks a stage with ``with stage("name"):``; this costs nothing unless a benchmark
is recording (see :func:`record_stages`), in which case the wall time of each stage is summed
per forward pass, with CUDA synchronisation around it.
"""

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Optional

import torch

_active: Optional[Dict[str, float]] = None


@contextmanager
def stage(name: str):
    """Time the enclosed block as stage ``name`` when recording; otherwise do nothing."""
    if _active is None:
        yield
        return
    _sync()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        _sync()
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


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
