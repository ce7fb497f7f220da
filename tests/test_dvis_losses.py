"""DVIS variational loss terms and targets against hand-computed values."""

import math

import pytest
import torch

from dvis_d2 import losses as L
from dvis_d2.targets import label_targets, verification_targets


def test_huber_hand_computed():
    v = torch.tensor([0.0, 0.05, 0.1, 0.5, 2.0])
    # v < 0.1: v^2 / 0.2; else v - 0.05
    want = torch.tensor([0.0, 0.0125, 0.05, 0.45, 1.95])
    assert torch.allclose(L.huber(v, 0.1), want)


def test_binary_loss_hand_computed():
    z = torch.tensor([[[-1.0, 0.05, 3.0, 1.5]]])
    ids = torch.tensor([[[0, 0, 1, 2]]])
    valid = torch.ones_like(ids, dtype=torch.bool)
    # bg -1 -> L_h(0) = 0; bg 0.05 -> 0.0125; fg 3 -> L_h(ReLU(2 - 3)) = 0; fg 1.5 -> L_h(0.5)
    loss = L.binary_loss(z, ids, valid, margin=2.0, theta=0.1)
    assert loss.item() == pytest.approx((0.0125 + 0.45) / 4)
    w = torch.tensor([[[1.0, 1.0, 2.0, 2.0]]])
    assert L.binary_loss(z, ids, valid, w).item() == pytest.approx((0.0125 + 2 * 0.45) / 6)
    valid[0, 0, 3] = False  # padding does not count
    assert L.binary_loss(z, ids, valid).item() == pytest.approx(0.0125 / 3)
    # margin m1 = 1 (research code): fg 1.5 is then already fine
    assert L.binary_loss(z, ids, valid, margin=1.0).item() == pytest.approx(0.0125 / 3)
    # a negative output on an instance still has a gradient (evaluated on the raw output z)
    z = torch.tensor([[[-0.5]]], requires_grad=True)
    L.binary_loss(z, torch.ones(1, 1, 1, dtype=torch.long), torch.ones(1, 1, 1).bool()).backward()
    assert z.grad.item() == pytest.approx(-1.0)


def test_pair_loss_hand_computed():
    fa = torch.tensor([2.0, 2.0, 2.0, 3.0])
    fb = torch.tensor([2.05, 2.5, 4.0, 3.5])
    same = torch.tensor([True, False, False, True])
    # same fd .05 -> .0125; diff fd .5 -> L_h(.5) = .45 (x3); diff fd 2 -> 0; same fd .5 -> .45
    got = L.pair_loss(fa, fb, same, margin=1.0, theta=0.1, diff_weight=3.0)
    assert got.item() == pytest.approx((0.0125 + 1.35 + 0.0 + 0.45) / 4)
    assert L.pair_loss(fa[:0], fb[:0], same[:0]).item() == 0.0


def test_stratified_offsets_hand_computed():
    got = {tuple(o) for o in L.stratified_offsets(5, 1, 2).tolist()}
    # dense |dy|+|dx| <= 1 and the dilation-2 grid within +-2, one of each +-pair
    assert got == {(0, 1), (1, 0), (0, 2), (2, -2), (2, 0), (2, 2)}
    # paper's base setting w=129, c=8, r=8: (145 - 1)/2 dense + (17^2 - 1)/2 grid - 2 shared
    assert len(L.stratified_offsets(129, 8, 8)) == 72 + 144 - 2
    with pytest.raises(ValueError, match="dilation"):
        L.stratified_offsets(5, 1, 0)


def test_stratified_pi_loss_hand_computed():
    f = torch.tensor([[[2.0, 2.2], [3.0, 0.0]]])
    ids = torch.tensor([[[1, 1], [2, 0]]])
    valid = torch.ones_like(ids, dtype=torch.bool)
    offsets = L.stratified_offsets(3, 1, 1)  # the 4 half-plane neighbours of a 3x3 window
    # pairs on instances: (0,0)-(0,1) same, fd .2 -> .15; (0,0)-(1,0) diff, fd 1 -> 0;
    # (0,1)-(1,0) diff, fd .8 -> L_h(.2) = .15
    fa, fb, same = L.stratified_pairs(f, ids, valid, offsets)
    assert len(fa) == 3 and same.sum() == 1
    loss = L.permutation_invariant_loss(f, ids, valid, "stratified", offsets, diff_weight=1.0)
    assert loss.item() == pytest.approx(0.1)
    # with the background as one more instance: 3 more pairs (2.0-0, 2.2-0, 3.0-0), all with
    # fd >= 1 between different ids -> 0
    loss_bg = L.permutation_invariant_loss(
        f, ids, valid, "stratified", offsets, include_background=True, diff_weight=1.0
    )
    assert loss_bg.item() == pytest.approx(0.3 / 6)
    # pixels outside the image never pair
    valid[0, 1, 0] = False
    assert len(L.stratified_pairs(f, ids, valid, offsets)[0]) == 1


def test_random_pi_loss_all_pairs_when_few_pixels():
    f = torch.tensor([[[2.0, 2.2], [3.0, 0.0]]])
    ids = torch.tensor([[[1, 1], [2, 0]]])
    valid = torch.ones_like(ids, dtype=torch.bool)
    fa, fb, same = L.random_pairs(f, ids, valid, num_pixels=10)
    assert len(fa) == 3  # all pairs of the 3 instance pixels
    loss = L.permutation_invariant_loss(f, ids, valid, "random", num_pixels=10, diff_weight=1.0)
    assert loss.item() == pytest.approx(0.1)  # the same 3 pairs as the stratified example
    fa, _, _ = L.random_pairs(
        torch.rand(2, 6, 6), torch.ones(2, 6, 6).long(), valid.new_ones(2, 6, 6), 5
    )
    assert len(fa) == 2 * 10  # 5 pixels per image -> 10 pairs each
    with pytest.raises(ValueError, match="PI_SAMPLING"):
        L.permutation_invariant_loss(f, ids, valid, "grid")


def test_mumford_shah_hand_computed():
    f = torch.tensor([[[0.0, 1.0, 1.0], [3.0, 1.0, 1.0]]])
    valid = torch.ones_like(f, dtype=torch.bool)
    # centre (0,0): dx = -1, dy = -3 -> log 11; centre (0,1): dx = 0, dy = 0 -> 0
    assert L.mumford_shah_loss(f, valid).item() == pytest.approx(math.log(11) / 2)
    valid[0, 1, 1] = False  # (0,1) loses its lower neighbour (1,1)
    assert L.mumford_shah_loss(f, valid).item() == pytest.approx(math.log(11))


def test_quantization_hand_computed_and_gradient():
    f = torch.tensor([[[0.0, 2.2, 2.7, 3.0]]], requires_grad=True)
    valid = torch.ones(1, 1, 4, dtype=torch.bool)
    loss = L.quantization_loss(f, valid)
    assert loss.item() == pytest.approx((0.2 + 0.3 + 0.0) / 3)
    loss.backward()  # gradient through the first f only: sign(f - round(f)) / n
    assert torch.allclose(f.grad[0, 0, 1:3], torch.tensor([1 / 3, -1 / 3]))
    assert f.grad[0, 0, 0] == 0


def _random_scene(seed=0, n=4, size=16):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(1, size, size, dtype=torch.long)
    for k in range(1, n + 1):
        y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
        ids[0, y : y + 6, x : x + 5] = k
    f = torch.rand(1, size, size, generator=g) * 5
    return f, ids


def test_permutation_invariance_of_every_term():
    f, ids = _random_scene()
    valid = torch.ones_like(ids, dtype=torch.bool)
    perm = torch.tensor([0, 3, 1, 4, 2])  # relabel instances 1..4, keep background 0
    ids2 = perm[ids]
    assert not torch.equal(ids, ids2)
    offsets = L.stratified_offsets(9, 2, 2)
    z = f - 1.0
    for fn in (
        lambda i: L.binary_loss(z, i, valid),
        lambda i: L.permutation_invariant_loss(f, i, valid, "stratified", offsets),
        lambda i: L.permutation_invariant_loss(
            f, i, valid, "random", num_pixels=20, generator=torch.Generator().manual_seed(1)
        ),
        lambda i: L.mumford_shah_loss(f, valid),
        lambda i: L.quantization_loss(f, valid),
    ):
        assert fn(ids).item() == pytest.approx(fn(ids2).item(), rel=1e-6)
    # the labels themselves matter: a different partition changes L_pi
    merged = ids.clamp(max=1)
    assert L.permutation_invariant_loss(f, merged, valid, "stratified", offsets).item() != (
        pytest.approx(L.permutation_invariant_loss(f, ids, valid, "stratified", offsets).item())
    )


def test_label_targets_overlap_weights_and_padding():
    # 8x12 image in a 8x16 padded batch, stride 4 -> 2x4 label map, valid 2x3
    big = torch.zeros(8, 12, dtype=torch.bool)
    big[:, :8] = True  # cells (0,0), (0,1), (1,0), (1,1)
    small = torch.zeros(8, 12, dtype=torch.bool)
    small[0:4, 4:12] = True  # cells (0,1), (0,2): on top of the big one
    t = label_targets([torch.stack([big, small])], [(8, 12)], (8, 16), 4, size_weight_max=10)
    assert t.ids.tolist() == [[[1, 2, 2, 0], [1, 1, 0, 0]]]
    assert t.valid.tolist() == [[[True, True, True, False], [True, True, True, False]]]
    assert t.masks[0].sum(dim=(1, 2)).tolist() == [3, 2]
    # weights clip(cbrt(6 / (area + 1)), 1, 10): big 3 px -> 1.145, small 2 px -> 1.260,
    # background 1 px -> 1.442; padding 0
    w = t.weights[0]
    assert w[0, 0].item() == pytest.approx((6 / 4) ** (1 / 3))
    assert w[0, 1].item() == pytest.approx((6 / 3) ** (1 / 3))
    assert w[1, 2].item() == pytest.approx((6 / 2) ** (1 / 3))
    assert w[0, 3].item() == 0
    uniform = label_targets([torch.stack([big, small])], [(8, 12)], (8, 16), 4, 1.0)
    assert set(uniform.weights[0][uniform.valid[0]].tolist()) == {1.0}
    with pytest.raises(ValueError, match="divisible"):
        label_targets([big[None]], [(8, 12)], (8, 14), 4)


def test_verification_targets_hand_computed():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2, :2] = True  # 4 px, class 3
    gt[1, 2:, :] = True  # 8 px, class 1
    cand = torch.zeros(3, 4, 4, dtype=torch.bool)
    cand[0, :2, :2] = True  # = gt 0: IoU 1
    cand[1, 0, :] = True  # with gt 0: inter 2, union 6 -> 1/3... with gt 1: 0
    cand[2, 0, 3] = True  # touches nothing: IoU 0
    cls, iou = verification_targets(cand, gt, torch.tensor([3, 1]), 5, 0.5, 0.1)
    assert iou.tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert cls.tolist() == [3, -1, 5]  # fg, ignored (0.1 <= IoU < 0.5), background
    cls, iou = verification_targets(cand, gt[:0], torch.zeros(0).long(), 5, 0.5, 0.1)
    assert cls.tolist() == [5, 5, 5] and iou.tolist() == [0, 0, 0]
