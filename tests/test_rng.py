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


def test_evaluating_more_often_does_not_change_the_training(tiny_shapes, tmp_path, repo_root):
    """Mask R-CNN samples its RoIs from torch's generator; with the same seed, a run evaluated
    after every other step ends with the same weights as a run evaluated only at the end."""
    from detectron2.utils.env import seed_all_rng

    from instseg_d2.testing import train_and_evaluate

    weights = []
    for period in (2, 0):
        out = str(tmp_path / f"period{period}")
        seed_all_rng(7)
        opts = ["SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", str(period)]
        train_and_evaluate(f"{repo_root}/configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml", out, opts)
        weights.append(torch.load(f"{out}/model_final.pth", weights_only=False)["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
