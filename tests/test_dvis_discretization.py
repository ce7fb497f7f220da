"""DVIS discretization: mean-shift, connected components and candidate filtering."""

import pytest
import torch

from dvis_d2.discretization import Discretizer
from dvis_d2.meanshift import connected_components, mean_shift_modes


def _plateaus(noise=0.0, seed=0):
    """A 20x30 label map with known plateaus, and their masks.

    A = 2.0 and B = 2.5 touch (closer than 0.9, farther than 0.4); D = 4.0 is in two
    disconnected pieces D1, D2; E = 5.2 (1.2 from D). Background 0.
    """
    f = torch.zeros(20, 30)
    regions = {
        "A": (slice(2, 8), slice(2, 10), 2.0),
        "B": (slice(2, 8), slice(10, 18), 2.5),
        "D1": (slice(12, 18), slice(2, 10), 4.0),
        "D2": (slice(12, 18), slice(20, 28), 4.0),
        "E": (slice(2, 8), slice(22, 28), 5.2),
    }
    masks = {}
    for name, (ys, xs, v) in regions.items():
        f[ys, xs] = v
        m = torch.zeros(20, 30, dtype=torch.bool)
        m[ys, xs] = True
        masks[name] = m
    if noise:
        g = torch.Generator().manual_seed(seed)
        f = (f + noise * (torch.rand(f.shape, generator=g) * 2 - 1)).clamp(min=0)
    return f, masks


def _as_set(masks: torch.Tensor):
    return {tuple(m.flatten().nonzero()[:, 0].tolist()) for m in masks}


def _expected(masks, *groups):
    return {
        tuple(torch.stack([masks[n] for n in g]).any(0).flatten().nonzero()[:, 0].tolist())
        for g in groups
    }


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_mean_shift_splits_plateaus_at_each_bandwidth(noise):
    f, m = _plateaus(noise)
    d = Discretizer(
        bandwidths=(0.9,), min_area=(1,), num_keep=(100,), merge_disconnected=False, dedup_iou=2.0
    )
    valid = torch.ones(1, 20, 30, dtype=torch.bool)
    # bandwidth 0.9: A and B (0.5 apart) are one segment, the rest apart; D's pieces are two
    c = d(f[None], valid)[0]
    assert _as_set(c.masks) == _expected(m, ("A", "B"), ("D1",), ("D2",), ("E",))
    # bandwidth 0.4: A and B split
    d.bandwidths = (0.4,)
    c = d(f[None], valid)[0]
    assert _as_set(c.masks) == _expected(m, ("A",), ("B",), ("D1",), ("D2",), ("E",))
    # with merging, the disconnected pieces of one cluster are also proposed together
    d.merge_disconnected = True
    c = d(f[None], valid)[0]
    assert _as_set(c.masks) == _expected(m, ("A",), ("B",), ("D1",), ("D2",), ("D1", "D2"), ("E",))
    assert c.values[c.masks.flatten(1).sum(1).argmax()].item() == pytest.approx(4.0, abs=0.1)


def test_mean_shift_modes_are_the_plateau_values_and_batched():
    f, _ = _plateaus()
    g = f.flip(1) * 0.5  # another image of the batch
    values = torch.stack([f, g]).flatten(1)
    valid = torch.ones_like(values, dtype=torch.bool)
    valid[1, :30] = False  # padding of the second image takes no part
    modes, clusters = mean_shift_modes(values, valid, 0.4)
    for i, img in enumerate((f, g)):
        one_m, one_c = mean_shift_modes(img.flatten()[None], valid[i : i + 1], 0.4)
        if i == 0:
            assert torch.equal(one_m[0], modes[0]) and torch.equal(one_c[0], clusters[0])
    assert modes[0].unique().tolist() == pytest.approx([0.0, 2.0, 2.5, 4.0, 5.2], abs=1e-3)
    assert clusters[0].unique().numel() == 5 and (clusters[1, :30] == -1).all()
    # 0.9: the 2.0 and 2.5 values meet at their mean (6x8 pixels each)
    modes, clusters = mean_shift_modes(values[:1], valid[:1], 0.9)
    assert clusters[0].unique().tolist() == [0, 1, 2, 3]
    for v, want in ((2.0, 2.25), (2.5, 2.25), (4.0, 4.0), (5.2, 5.2)):
        assert modes[0][values[0] == v].unique().tolist() == pytest.approx([want], abs=0.01)
    with pytest.raises(ValueError, match="bin_fraction"):
        mean_shift_modes(values, valid, 0.4, bin_fraction=0.6)


def test_connected_components_hand_built():
    lab = torch.tensor(
        [
            [
                [1, 1, -1, 2],
                [-1, 1, -1, 2],
                [3, -1, 1, 1],  # (2,2) touches (1,1) only diagonally: another component
            ]
        ]
    )
    comp = connected_components(torch.cat([lab, lab]))
    c = comp[0]
    assert c[0, 0] == c[0, 1] == c[1, 1] == 0
    assert c[0, 3] == c[1, 3] == 3
    assert c[2, 2] == c[2, 3] == 10 and c[2, 0] == 8
    assert (c[lab[0] < 0] == -1).all()
    assert torch.equal(comp[1][lab[0] >= 0], c[lab[0] >= 0] + 12)  # second image: offset ids


def test_filters_keep_and_dedup():
    f, m = _plateaus()
    valid = torch.ones(1, 20, 30, dtype=torch.bool)
    valid[0, :, 29] = False
    base = dict(min_area=(1, 1), num_keep=(100, 100), merge_disconnected=False)
    # both bandwidths find D1, D2, E; duplicates are dropped: 4 + 2 (A, B at 0.4) = 6
    d = Discretizer(bandwidths=(0.9, 0.4), dedup_iou=0.9, **base)
    c = d(f[None], valid)[0]
    assert len(c) == 6 and c.bandwidths.tolist().count(1) == 2
    d = Discretizer(bandwidths=(0.9, 0.4), dedup_iou=2.0, **base)
    assert len(d(f[None], valid)[0]) == 9
    # area filter (E has 36 px, D1 48) and keep the largest
    d = Discretizer(bandwidths=(0.4,), min_area=(40,), num_keep=(2,), merge_disconnected=False)
    c = d(f[None], valid)[0]
    assert c.masks.flatten(1).sum(1).tolist() == [48, 48]
    # thin filter: a 1x12 line (perimeter 12 > 5, area / perimeter 1 < 1.8) goes, blocks stay
    g = f.clone()
    g[10, 2:14] = 7.0
    d = Discretizer(bandwidths=(0.4,), min_area=(1,), num_keep=(100,), perimeter_min=5,
                    area_perimeter_ratio=1.8, merge_disconnected=False)  # fmt: skip
    c = d(g[None], valid)[0]
    assert not any(v == pytest.approx(7.0) for v in c.values.tolist())
    assert len(c) == 5
    # background only: no candidate
    assert len(d(torch.zeros(1, 20, 30), valid)[0]) == 0
    with pytest.raises(ValueError, match="one entry per bandwidth"):
        Discretizer(bandwidths=(0.9, 0.4), min_area=(1,), num_keep=(1, 1))
