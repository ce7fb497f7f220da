"""sparseinst_d2.diagnostics. SparseInst's class signal reaches the instance features through
the activation maps (paper Sec. 3.3: the IAMs have no supervision of their own; they are trained
through the matched losses), on the toy task of ``iam-toy``: the input features carry each
object's class inside the object only, so classes can be learnt only by pooling locally. The
measures of ``match-stats`` on hand-made inputs (on a trained model: test_sparseinst_e2e.py)."""

import pytest
import torch

from sparseinst_d2.diagnostics import iam_toy as toy
from sparseinst_d2.diagnostics import main, share_on_objects
from sparseinst_d2.diagnostics.match_stats import ridge_top1


def test_toy_batch():
    feats, targets, labels = toy.toy_batch(4, torch.Generator().manual_seed(0))
    assert feats.shape == (4, toy.C, toy.S, toy.S)
    for b, (t, lab) in enumerate(zip(targets, labels)):
        assert t.shape == (len(lab), 2 * toy.S, 2 * toy.S) and 1 <= len(lab) <= 3
        assert (t.sum(0) <= 1).all()  # visible parts do not overlap
        small = t[:, ::2, ::2]
        # the class channel of each object is raised exactly where it is visible
        for m, c in zip(small, lab.tolist()):
            assert (feats[b, c][m > 0] > 0.5).all()


def test_decoder_learns_classes_through_the_maps():
    dec, crit = toy.build(dim=16, seed=0)
    before = toy.measure(dec, crit)
    assert before["top1"] < 0.5  # chance: 1/3
    assert before["on_object"] == pytest.approx(before["area"], rel=0.05)  # uniform maps
    for _ in toy.train(dec, crit, steps=400, lr=1e-2):
        pass
    assert toy.measure(dec, crit)["top1"] > 0.8


def test_share_on_objects_hand_computed():
    # maps of 2x2 cells; the object, at 4x4, fills the top-left cell and one pixel of the
    # top-right cell: cell fractions [[1, 0.25], [0, 0]]
    obj = torch.zeros(1, 4, 4)
    obj[0, :2, :2] = 1.0
    obj[0, 0, 2] = 1.0
    peaked = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # all on the top-left cell
    uniform = torch.full((2, 2), 0.25)
    right = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    weights = torch.stack([peaked, uniform, right])[:, None]  # (G=3, M=1, 2, 2)
    share = share_on_objects(weights, obj)
    assert share.shape == (1,)
    assert share.item() == pytest.approx((1.0 + 0.25 * 1.25 + 0.25) / 3)


def test_ridge_probe():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    x = torch.randn(60, 4, generator=gen) * 0.1
    x[torch.arange(60), y] += 1.0  # class c raises feature c
    assert ridge_top1(x[:45], y[:45], x[45:], y[45:], num_classes=3) == 1.0
    noise = torch.randn(60, 4, generator=gen)  # no class information
    assert ridge_top1(noise[:45], y[:45], noise[45:], y[45:], num_classes=3) < 0.7


def test_unknown_command_names_the_commands():
    with pytest.raises(SystemExit, match="match-stats,iam-toy"):
        main(["stats"])
