"""An evaluation between training steps does not change the training's random draws."""

import random
from types import SimpleNamespace

import numpy as np
import torch

from instseg_d2.engine import Trainer
from instseg_d2.utils.rng import preserved_rng


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def _seed():
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)


def test_preserved_rng_restores_python_numpy_and_torch():
    _seed()
    expected = _draws()
    _seed()
    with preserved_rng():
        _draws(), _draws()
    assert _draws() == expected
    _seed()
    try:
        with preserved_rng():
            _draws()
            raise RuntimeError("an evaluation that fails")
    except RuntimeError:
        pass
    assert _draws() == expected


def test_the_periodic_evaluation_draws_nothing_from_the_training_rng():
    def evaluate(cfg, model):  # e.g. a test loader drawing its workers' seed
        torch.empty((), dtype=torch.int64).random_()
        np.random.rand(3)
        return {"segm": {"AP": 1.0}}, []

    trainer = SimpleNamespace(cfg=None, model=None, evaluate=evaluate)
    _seed()
    expected = _draws()
    _seed()
    assert Trainer._evaluate_and_record(trainer) == {"segm": {"AP": 1.0}}
    assert trainer.last_eval_problems == []
    assert _draws() == expected
