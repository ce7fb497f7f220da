"""Shared fixtures: a per-session shapes cache, the tiny shapes splits, the tools."""

import importlib.util
import os

import pytest
import torch


def _test_threads() -> int:
    """At most 2 threads (the CI machine's cores); 1 when other processes keep a core busy
    (1-minute load average >= 1): the suite's tiny ops then wait on the busy core, and two
    threads were measured up to 30x slower than one. OMP_NUM_THREADS overrides it."""
    if os.environ.get("OMP_NUM_THREADS"):
        return int(os.environ["OMP_NUM_THREADS"])
    cores = max(1, min(2, os.cpu_count() or 1))
    busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= 1.0
    return 1 if busy else cores


torch.set_num_threads(_test_threads())


@pytest.fixture(scope="session", autouse=True)
def _shapes_cache(tmp_path_factory):
    """Keep generated datasets of the suite away from the user's cache."""
    if "INSTSEG_CACHE" not in os.environ:
        os.environ["INSTSEG_CACHE"] = str(tmp_path_factory.mktemp("instseg_cache"))
    yield


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """Register shapes_tiny_train / shapes_tiny_val; returns their names."""
    from instseg_d2.testing import register_tiny_shapes

    return register_tiny_shapes(str(tmp_path_factory.mktemp("tiny_shapes")))


@pytest.fixture(scope="session")
def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def load_tool(repo_root):
    """``load_tool(name)``: ``tools/<name>.py`` imported as a module (the user tools are
    scripts, not a package; everything else is imported as a module)."""

    def load(name: str):
        path = os.path.join(repo_root, "tools", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def checkpoint_log():
    """Messages logged by the checkpointers (fvcore's checkpoint logger, INFO and above) while
    the test runs. detectron2's logging setup stops them from reaching pytest's caplog."""
    import logging

    messages = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())
    log = logging.getLogger("fvcore.common.checkpoint")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield messages
    log.removeHandler(handler)
    log.setLevel(level)


@pytest.fixture(scope="session")
def shapes_checkpoint(tiny_shapes, tmp_path_factory, repo_root):
    """``shapes_checkpoint(config)``: the ``model_final.pth`` (recording its classes) of a
    1-iteration training of ``config`` (relative to the repository) on the tiny shapes splits,
    trained once per test session."""
    from instseg_d2.testing import train_and_evaluate

    root = tmp_path_factory.mktemp("checkpoints")
    cache = {}

    def get(config: str) -> str:
        if config not in cache:
            out = root / config.replace("/", "_")
            opts = ["SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()"]
            train_and_evaluate(os.path.join(repo_root, config), str(out), opts)
            cache[config] = str(out / "model_final.pth")
        return cache[config]

    return get
