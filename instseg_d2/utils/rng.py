"""Random state that a block of code may not change."""

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without changing what the random generators draw after it: Python's,
    NumPy's and torch's global generators (CPU, and every CUDA device once CUDA is initialised)
    are restored on exit. For work between training steps, e.g. an evaluation, whose data
    loader draws its workers' seed from torch's generator: without this, evaluating more or
    less often would change the random choices (RoI sampling, ...) of the steps after it."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
