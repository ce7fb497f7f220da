"""Shared layers against hand-computed values."""

import numpy as np
import pytest
import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from instseg_d2.layers import (
    aligned_bilinear,
    boxes_from_masks,
    center_of_mass,
    compute_locations,
    coordinate_features,
    dice_coefficient,
    dice_loss,
    resize_maps,
    split_per_image,
    instance_bitmasks,
    mask_iou_matrix,
    sample_at_stride,
)


def test_dice_hand_computed():
    p = torch.tensor([[0.5, 1.0, 0.0, 0.5]])
    t = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # inter = 0.5 + 1 = 1.5; sum p^2 = 0.25 + 1 + 0.25 = 1.5; sum t^2 = 2
    assert dice_coefficient(p, t, eps=0.0).item() == pytest.approx(3.0 / 3.5)
    assert dice_loss(p, t, eps=0.0).item() == pytest.approx(1 - 3.0 / 3.5)
    assert dice_loss(t, t, eps=0.0).item() == pytest.approx(0.0)
    two = dice_loss(torch.cat([p, t]), torch.cat([t, t]), eps=0.0, reduction="mean")
    assert two.item() == pytest.approx((1 - 3.0 / 3.5) / 2)


def test_dice_eps_and_errors():
    z = torch.zeros(1, 3)
    assert dice_loss(z, z, eps=1e-5).item() == pytest.approx(1.0)  # no overlap, no NaN
    with pytest.raises(ValueError, match="shapes differ"):
        dice_loss(torch.zeros(1, 3), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="reduction"):
        dice_loss(z, z, reduction="avg")


def test_aligned_bilinear_alignment():
    # Reference definition (CondInst): output index f*i + f//2 lands exactly on input sample i,
    # values between are linear, the first f//2 outputs replicate the first input.
    x = torch.tensor([4.0, 12.0, 20.0, 28.0]).view(1, 1, 1, -1).repeat(1, 1, 3, 1)
    for f in (2, 4):
        y = aligned_bilinear(x, f)
        assert y.shape == (1, 1, 3 * f, 4 * f)
        row = y[0, 0, 0]
        assert torch.allclose(row[torch.arange(4) * f + f // 2], x[0, 0, 0])
        assert torch.allclose(row[: f // 2 + 1], torch.full((f // 2 + 1,), 4.0))
        step = 8.0 / f  # linear between samples
        assert torch.allclose(
            row[f // 2 + 1 : 3 * f + f // 2 + 1].diff(), torch.full((3 * f - 1,), step)
        )
    assert torch.equal(aligned_bilinear(x, 1), x)
    with pytest.raises(ValueError):
        aligned_bilinear(torch.zeros(2, 3, 4), 2)


def test_center_of_mass_and_boxes():
    m = torch.zeros(3, 5, 6, dtype=torch.bool)
    m[0, 1:3, 2:5] = True  # rows 1-2, cols 2-4
    m[1, 4, 0] = True
    com = center_of_mass(m)
    assert torch.allclose(com[0], torch.tensor([3.0, 1.5]))
    assert torch.allclose(com[1], torch.tensor([0.0, 4.0]))
    assert torch.isnan(com[2]).all()
    boxes = boxes_from_masks(m)
    assert boxes.tolist() == [[2, 1, 5, 3], [0, 4, 1, 5], [0, 0, 0, 0]]
    assert boxes_from_masks(torch.zeros(0, 4, 4)).shape == (0, 4)


def test_locations_and_coords():
    loc = compute_locations(2, 3, 8)
    assert loc.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    c = coordinate_features(2, 3, 5)
    assert c.shape == (2, 2, 3, 5)
    assert c[0, 0, 0].tolist() == [-1, -0.5, 0, 0.5, 1]
    assert c[0, 1, :, 0].tolist() == [-1, 0, 1]


def test_resize_maps_and_split_per_image():
    x = torch.arange(8.0).view(2, 2, 2)
    up = resize_maps(x, (4, 4))
    assert up.shape == (2, 4, 4) and up[0, 0, 0] == 0 and up[1, 3, 3] == 7  # edges: no overshoot
    assert torch.allclose(up[:, 1:3, 1:3].mean((1, 2)), x.mean((1, 2)))
    assert resize_maps(x[:0], (3, 5)).shape == (0, 3, 5)  # no map: empty, not an error
    # traced at one size, resized to the size of another input
    traced = torch.jit.trace(lambda m, ref: resize_maps(m, ref.shape[-2:]), (x, torch.zeros(4, 4)))
    assert traced(x, torch.zeros(3, 6)).shape == (2, 3, 6)
    assert traced(x[:0], torch.zeros(3, 6)).shape == (0, 3, 6)

    rows = torch.arange(5)
    assert [p.tolist() for p in split_per_image(rows, [[0, 0], [0, 0, 0]])] == [[0, 1], [2, 3, 4]]
    assert split_per_image(rows, [[]])[0] is rows  # one image: no count taken


# ------------------------------------------------------------------------- GT masks, IoU
def _rect_gt(fmt: str) -> Instances:
    """A 10 x 12 image with one instance: rows 2-5, columns 4-9 (as a polygon: its outline)."""
    inst = Instances((10, 12))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 2.0, 10.0, 6.0]]))
    if fmt == "polygon":
        inst.gt_masks = PolygonMasks([[np.array([4.0, 2, 10, 2, 10, 6, 4, 6])]])
    else:
        m = torch.zeros(1, 10, 12, dtype=torch.bool)
        m[0, 2:6, 4:10] = True
        inst.gt_masks = BitMasks(m)
    return inst


@pytest.mark.parametrize("fmt", ["bitmask", "polygon"])
def test_instance_bitmasks_pad_and_stride(fmt):
    inst = _rect_gt(fmt)
    m = instance_bitmasks(inst)
    assert m.dtype == torch.bool and m.shape == (1, 10, 12)
    assert m[0, 2:6, 4:10].all() and m.sum() == 24
    padded = instance_bitmasks(inst, pad_to=(16, 16))
    assert padded.shape == (1, 16, 16) and torch.equal(padded[:, :10, :12], m)
    assert not padded[:, 10:].any() and not padded[:, :, 12:].any()
    assert instance_bitmasks(inst, pad_to=(4, 8)).shape == (1, 4, 8)  # cropped
    # stride 4, offset 2 (cell centres): rows / columns 2, 6, 10, 14 of the padded mask
    cells = instance_bitmasks(inst, pad_to=(16, 16), stride=4)
    assert cells.shape == (1, 4, 4)
    assert cells[0].nonzero().tolist() == [[0, 1]]  # row 2, column 6 (2 and 10 are outside)
    assert torch.equal(sample_at_stride(padded.float(), 4), cells.float())  # any tensor
    # offset 0 (top-left pixels): rows 0, 4, 8, columns 0, 4, 8 -> (4, 4) and (4, 8) inside
    corners = instance_bitmasks(inst, stride=4, offset=0)
    assert corners.shape == (1, 3, 3) and corners[0].nonzero().tolist() == [[1, 1], [1, 2]]


def test_instance_bitmasks_polygons_at_stride_and_errors():
    inst = _rect_gt("polygon")
    # the outline scaled by 1/2 (x 2-5, y 1-3) rasterised on the 5 x 6 grid of cells
    grid = instance_bitmasks(inst, pad_to=(10, 12), stride=2, polygons_at_stride=True)
    assert grid.shape == (1, 5, 6) and grid[0].nonzero().tolist() == [
        [r, c] for r in (1, 2) for c in (2, 3, 4)
    ]
    bits = _rect_gt("bitmask")  # BitMasks are sampled at the cell centres whatever the flag
    assert torch.equal(
        instance_bitmasks(bits, pad_to=(10, 12), stride=2, polygons_at_stride=True),
        instance_bitmasks(bits, pad_to=(10, 12), stride=2),
    )
    with pytest.raises(ValueError, match="needs pad_to"):
        instance_bitmasks(inst, stride=2, polygons_at_stride=True)
    with pytest.raises(ValueError, match="stride 4, offset 4"):
        instance_bitmasks(inst, stride=4, offset=4)
    inst.gt_masks = torch.zeros(1, 10, 12)
    with pytest.raises(TypeError, match="BitMasks or PolygonMasks, got Tensor"):
        instance_bitmasks(inst)


def test_mask_iou_matrix_pairs_and_self():
    a = torch.zeros(2, 2, 4, dtype=torch.bool)
    a[0, :, :2] = True  # 4 pixels
    a[1, 0, :] = True  # 4 pixels, 2 shared with a[0]
    b = torch.zeros(3, 2, 4, dtype=torch.bool)
    b[0] = a[0]
    b[1, 1, 3] = True  # disjoint from a[0], 0 shared with a[1]
    iou = mask_iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert torch.allclose(iou, torch.tensor([[1.0, 0.0, 0.0], [2 / 6, 0.0, 0.0]]))
    own = mask_iou_matrix(a)
    assert torch.allclose(own, torch.tensor([[1.0, 2 / 6], [2 / 6, 1.0]]))
    assert torch.equal(mask_iou_matrix(a, areas=torch.tensor([4.0, 4.0])), own)
    assert mask_iou_matrix(a[:0], b).shape == (0, 3) and mask_iou_matrix(a, b[:0]).shape == (2, 0)
    with pytest.raises(ValueError, match="areas"):
        mask_iou_matrix(a, b, areas=torch.tensor([4.0, 4.0]))
