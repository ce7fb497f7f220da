"""SparseInst's class signal reaches the instance features through the activation maps (paper
Sec. 3.3: the IAMs have no supervision of their own; they are trained through the matched
losses), on the toy task of ``tools/sparseinst_iam_toy.py``: the input features carry each
object's class inside the object only, so classes can be learnt only by pooling locally."""

import pytest
import torch

from sparseinst_d2.decoder import share_on_objects


@pytest.fixture(scope="module")
def toy(load_tool):
    return load_tool("sparseinst_iam_toy")


def test_toy_batch(toy):
    feats, targets, labels = toy.toy_batch(4, torch.Generator().manual_seed(0))
    assert feats.shape == (4, toy.C, toy.S, toy.S)
    for b, (t, lab) in enumerate(zip(targets, labels)):
        assert t.shape == (len(lab), 2 * toy.S, 2 * toy.S) and 1 <= len(lab) <= 3
        assert (t.sum(0) <= 1).all()  # visible parts do not overlap
        small = t[:, ::2, ::2]
        # the class channel of each object is raised exactly where it is visible
        for m, c in zip(small, lab.tolist()):
            assert (feats[b, c][m > 0] > 0.5).all()


def test_decoder_learns_classes_through_the_maps(toy):
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
