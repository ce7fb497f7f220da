"""SOLO / Decoupled SOLO / SOLOv2: assignment, Matrix NMS, heads, losses, loader, end to end."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import BitMasks, Boxes, Instances
from torch import nn

from instseg_d2.layers import mask_iou_matrix, matrix_nms, point_nms
from solo_d2 import SOLO, DecoupledSOLOHead, SOLOHead, SOLOv2Head
from solo_d2.losses import category_loss, solo_losses
from solo_d2.postprocess import SOLOPostProcessor
from solo_d2.reference_rules import cv2_linear_resize_binary, reference_mask_targets
from solo_d2.targets import assign_level, mask_targets, rescale_masks, solo_targets


# --------------------------------------------------------------------------- helpers
def _instances(masks, classes):
    """Instances of a (G, H, W) bool mask stack, boxes from the masks."""
    inst = Instances(tuple(masks.shape[-2:]))
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def _box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# --------------------------------------------------------------------------- assignment
def test_assign_single_cell_and_centre_of_mass():
    # 64 x 64 input, S = 8 (cells of 8 px). An L-shaped mask: its box centre (15.5, 15.5) is in
    # cell (1, 1), its centre of mass is not. Mass: bar rows 0-31 x cols 0-3 (128 px, mean x
    # 1.5, mean y 15.5) + bar rows 28-31 x cols 4-31 (112 px, mean x 17.5, mean y 29.5):
    # x = (128*1.5 + 112*17.5)/240 = 8.9667, y = (128*15.5 + 112*29.5)/240 = 22.0333
    # -> cell (row 2, col 1). sqrt(box area) = 32; sigma 0.2: half size 3.2 px, region
    # x 5.77..12.17 -> cols 0..1, y 18.83..25.23 -> rows 2..3; within the 3x3 around (2, 1).
    # (The box centre would give cell (2, 2) and cols 1..2.)
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    m[0, 0:32, 0:4] = True
    m[0, 28:32, 4:32] = True
    inst = _instances(m, [3])
    from instseg_d2.layers import center_of_mass

    com = center_of_mass(m)
    assert com[0].tolist() == pytest.approx([8.9667, 22.0333], abs=1e-3)
    labels, owner = assign_level(
        inst.gt_boxes.tensor, inst.gt_classes, com, (64, 64), 8, (16, 64), 0.2, num_classes=5
    )
    positives = {tuple(rc) for rc in torch.nonzero(owner >= 0).tolist()}
    assert positives == {(2, 0), (2, 1), (3, 0), (3, 1)}
    assert (labels[owner >= 0] == 3).all() and (labels[owner < 0] == 5).all()
    # out of the level's scale range: nothing
    labels, owner = assign_level(
        inst.gt_boxes.tensor, inst.gt_classes, com, (64, 64), 8, (1, 31.9), 0.2, 5
    )
    assert (owner == -1).all() and (labels == 5).all()


def test_assign_3x3_clamp_overlap_and_empty_mask():
    # sigma 1: the centre region of a 40 x 40 square (rows 20-59, cols 4-43, centre of mass
    # (23.5, 39.5), cell (4, 2)) spans cols 0..5 / rows 2..7; the 3x3 neighbourhood clamps it
    # to rows 3..5 x cols 1..3.
    big = _box_mask(64, 64, 20, 60, 4, 44)
    # a second instance whose region covers cell (5, 3) wins that cell (later annotation),
    # 4 x 4 square rows 40-43, cols 26-29: centre (27.5, 41.5) -> cell (5, 3); half size 2 px
    # -> x 25.5..29.5 -> col 3; y 39.5..43.5 -> row 4..5.
    small = _box_mask(64, 64, 40, 44, 26, 30)
    empty = torch.zeros(64, 64, dtype=torch.bool)
    masks = torch.stack([big, small, empty])
    inst = _instances(masks, [0, 1, 2])
    inst.gt_boxes.tensor[2] = torch.tensor([0.0, 0.0, 20.0, 20.0])  # a box but no mask
    from instseg_d2.layers import center_of_mass

    labels, owner = assign_level(
        inst.gt_boxes.tensor, inst.gt_classes, center_of_mass(masks), (64, 64), 8, (1, 64), 1.0,
        num_classes=5,
    )  # fmt: skip
    expect = torch.full((8, 8), -1)
    expect[3:6, 1:4] = 0
    expect[4:6, 3] = 1  # the later instance overwrites class and owner
    assert torch.equal(owner, expect)
    assert torch.equal(labels, torch.where(expect >= 0, expect, torch.tensor(5)))


def test_solo_targets_two_levels_two_images():
    # Image 0: a 20 x 20 square, rows 0-19, cols 40-59, centre of mass (49.5, 9.5), sqrt(area)
    # 20: positive at level 0 (range 1-24) and level 1 (16-64). Half size 0.2 * 20 / 2 = 2 px:
    # region x 47.5..51.5, y 7.5..11.5.
    #   level 0, S = 8 (8-px cells): centre cell (1, 6); region cols 5..6, rows 0..1
    #     -> cells 5, 6, 13, 14;
    #   level 1, S = 4 (16-px cells): centre cell (0, 3); region cols 2..3, row 0 -> cells 2, 3.
    # Image 1: no instance.
    m0 = _box_mask(64, 64, 0, 20, 40, 60)[None]
    gts = [_instances(m0, [4]), _instances(torch.zeros(0, 64, 64, dtype=torch.bool), [])]
    masks = [m0, torch.zeros(0, 64, 64, dtype=torch.bool)]
    targets = solo_targets(gts, masks, [8, 4], [(1, 24), (16, 64)], 0.2, num_classes=5)
    assert targets[0].labels.shape == (2, 8, 8) and targets[1].labels.shape == (2, 4, 4)
    assert sorted(targets[0].pos.tolist()) == [[0, 5, 0], [0, 6, 0], [0, 13, 0], [0, 14, 0]]
    assert sorted(targets[1].pos.tolist()) == [[0, 2, 0], [0, 3, 0]]
    assert (targets[0].labels[1] == 5).all()
    assert targets[1].labels[0].flatten()[[2, 3]].tolist() == [4, 4]


def test_mask_targets_rescaled_like_the_reference():
    # bilinear x1/4 (align_corners=False, as cv2 INTER_LINEAR) samples output pixel i at input
    # 4i + 1.5, i.e. the mean of pixels 4i+1 and 4i+2 in each direction; binarised at 0.5.
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 1:7, 1:7] = True  # pixels 1, 2, 5, 6 on in both directions -> all 1
    assert rescale_masks(m, (2, 2))[0].tolist() == [[True, True], [True, True]]
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 0:2, 0:3] = True  # rows: pixel 1 on, 2 off; cols 1, 2 on -> 0.5 -> on
    assert rescale_masks(m, (2, 2))[0].tolist() == [[True, False], [False, False]]
    m[0, 0:2, 0:2] = False  # now only pixel (1, 2) of the four: 0.25 -> off
    assert not rescale_masks(m, (2, 2)).any()
    m[0, 0:2, 0:3] = True
    pos = torch.tensor([[0, 7, 0], [0, 9, 0]])
    t = mask_targets(pos, [m], (2, 2), {})
    assert t.shape == (2, 2, 2) and t.sum() == 2


def test_shared_cell_paper_vs_reference_rules():
    # 64 x 64 input, S = 8. Instance 0: square rows/cols 20-35 (centre of mass (27.5, 27.5),
    # cell (3, 3); half size 1.6 px -> region = cell (3, 3) only). Instance 1: 4 x 8 box rows
    # 26-29, cols 24-31, same centre, same single cell. Paper: the later instance owns cell 27;
    # AdelaiDet: both keep it (two positives, one class: the later instance's).
    masks = torch.stack([_box_mask(64, 64, 20, 36, 20, 36), _box_mask(64, 64, 26, 30, 24, 32)])
    gts = [_instances(masks, [1, 4])]
    args = ([masks], [8], [(1, 64)], 0.2, 5)
    paper = solo_targets(gts, *args)[0]
    ref = solo_targets(gts, *args, rules="reference")[0]
    assert paper.pos.tolist() == [[0, 27, 1]]
    assert ref.pos.tolist() == [[0, 27, 0], [0, 27, 1]]
    assert torch.equal(paper.labels, ref.labels) and paper.labels[0, 3, 3] == 4
    assert (paper.labels[0].flatten()[torch.arange(64) != 27] == 5).all()
    t = reference_mask_targets(ref.pos, [masks], [(64, 64)], (16, 16), {})
    assert torch.equal(t.bool(), rescale_masks(masks, (16, 16)))  # x1/4 exactly: same masks
    with pytest.raises(ValueError, match="TARGET_RULES must be one of"):
        solo_targets(gts, *args, rules="mmdet")


def test_cv2_linear_resize_binary_fixed_point():
    # AdelaiDet rescales a 17 x 8 mask by 1/4 to int(17/4 + .5) x int(8/4 + .5) = 4 x 2. Output
    # (2, 1) samples y = 2.5 * 17/4 - 0.5 = 10.125 (rows 10, 11, weights round(.875 * 2048) =
    # 1792 and 256) and x = 1.5 * 4 - 0.5 = 5.5 (columns 5, 6, weights 1024, 1024). With pixels
    # (10, 6) and (11, 5) on, each row interpolates to 1024 (of 2048); cv2's 8-bit vertical pass
    # gives ((1024 >> 4) * 1792 >> 16) + ((1024 >> 4) * 256 >> 16) = 1 + 0, (1 + 2) >> 2 = 0:
    # off, where exact bilinear interpolation gives 0.5 (on at >= 0.5).
    m = torch.zeros(1, 17, 8, dtype=torch.bool)
    m[0, 10, 6] = m[0, 11, 5] = True
    assert not cv2_linear_resize_binary(m, (4, 2)).any()
    assert rescale_masks(m, (4, 2))[0, 2, 1]
    # the full 2 x 2 block: rows of 2048, (128 * 1792 >> 16) + (128 * 256 >> 16) = 3 + 0 -> on
    m[0, 10:12, 5:7] = True
    assert cv2_linear_resize_binary(m, (4, 2))[0].nonzero().tolist() == [[2, 1]]
    # an exact x1/4 (sides multiple of 4) samples every output at the mean of 2 x 2 pixels
    # with weights 1024: the same as exact bilinear interpolation thresholded at 0.5
    g = torch.Generator().manual_seed(0)
    r = torch.rand(3, 32, 24, generator=g) < 0.5
    assert torch.equal(cv2_linear_resize_binary(r, (8, 6)), rescale_masks(r, (8, 6)))


def test_reference_target_rules_need_solov2_head():
    model = _tiny_model("SOLOHead")
    kw = dict(backbone=model.backbone, head=model.head, postprocessor=model.postprocessor,
              instance_in_features=model.instance_in_features, num_grids=model.num_grids,
              scale_ranges=model.scale_ranges, sigma=0.2, num_classes=3,
              pixel_mean=[128.0] * 3, pixel_std=[64.0] * 3)  # fmt: skip
    with pytest.raises(ValueError, match="needs MODEL.SOLO.HEAD_NAME SOLOv2Head"):
        SOLO(**kw, target_rules="reference")
    with pytest.raises(ValueError, match="TARGET_RULES must be one of"):
        SOLO(**kw, target_rules="adelaidet")


# --------------------------------------------------------------------------- Matrix NMS
def _matrix_nms_per_pair(masks, labels, scores, kernel, sigma):
    """The decay formula written pair by pair (SOLOv2 paper, class-aware as the code)."""
    n = len(scores)
    iou = lambda a, b: ((masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()).item()
    f = (lambda x: math.exp(-sigma * x * x)) if kernel == "gaussian" else (lambda x: 1 - x)
    comp = [max([iou(k, i) for k in range(i) if labels[k] == labels[i]] or [0.0])
            for i in range(n)]  # fmt: skip
    out = []
    for j in range(n):
        decay = 1.0
        for i in range(j):
            if labels[i] == labels[j]:
                decay = min(decay, f(iou(i, j)) / f(comp[i]))
        out.append(scores[j].item() * decay)
    return torch.tensor(out)


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms_equals_per_pair_formula(kernel):
    g = torch.Generator().manual_seed(0)
    n, size = 14, 12
    base = torch.rand(4, size, size, generator=g) > 0.5
    # masks derived from a few bases so that IoUs are high and varied
    masks = base[torch.randint(0, 4, (n,), generator=g)] ^ (
        torch.rand(n, size, size, generator=g) > 0.85
    )
    labels = torch.randint(0, 3, (n,), generator=g)
    scores = torch.sort(torch.rand(n, generator=g), descending=True).values
    got = matrix_nms(masks, labels, scores, kernel=kernel, sigma=2.0)
    want = _matrix_nms_per_pair(masks, labels, scores, kernel, 2.0)
    assert torch.allclose(got, want, atol=1e-6)


def test_matrix_nms_hand_values():
    a = _box_mask(4, 4, 0, 2, 0, 4)  # 8 px
    b = _box_mask(4, 4, 0, 4, 0, 2)  # 8 px, 4 shared: IoU 4 / 12 = 1/3
    masks = torch.stack([a, b, a])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # same class: b decays by exp(-2/9); the copy of a: from a exp(-2)/1, from b
    # exp(-2/9)/exp(-2/9) = 1 -> exp(-2)
    got = matrix_nms(masks, torch.tensor([0, 0, 0]), scores, "gaussian", 2.0)
    assert got.tolist() == pytest.approx([0.9, 0.8 * math.exp(-2 / 9), 0.7 * math.exp(-2)])
    # other classes do not suppress
    got = matrix_nms(masks, torch.tensor([0, 1, 2]), scores, "gaussian", 2.0)
    assert got.tolist() == pytest.approx(scores.tolist())
    assert matrix_nms(masks, torch.tensor([0, 0, 0]), scores, "linear")[2] == 0
    assert mask_iou_matrix(masks)[0, 1].item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="kernel"):
        matrix_nms(masks, torch.tensor([0, 0, 0]), scores, kernel="box")


def test_point_nms_keeps_local_maxima():
    heat = torch.tensor([[0.1, 0.5, 0.2], [0.3, 0.4, 0.6], [0.9, 0.2, 0.1]]).view(1, 1, 3, 3)
    # kernel 2: a cell survives if >= its top, left and top-left neighbours
    kept = point_nms(heat, 2)[0, 0]
    want = torch.tensor([[0.1, 0.5, 0.0], [0.3, 0.0, 0.6], [0.9, 0.0, 0.0]])
    assert torch.allclose(kept, want)


# --------------------------------------------------------------------------- heads
def _feats(n=2, ch=32, sizes=((8, 8), (8, 8), (4, 4), (2, 2), (2, 2)), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, ch, h, w, generator=g) for h, w in sizes]


HEAD_KW = dict(in_channels=32, num_classes=3, num_grids=[5, 4, 3, 2, 2], channels=32,
               num_convs=2, norm="GN")  # fmt: skip


def test_decoupled_mask_is_product_of_sigmoids():
    head = DecoupledSOLOHead(**HEAD_KW)
    out = head(_feats())
    assert [x.shape for x in out["masks_x"]][0] == (2, 5, 16, 16)
    s = 5
    img, cells = torch.tensor([0, 1, 1]), torch.tensor([0, 7, 24])  # (0,0), (1,2), (4,4)
    got = head.mask_probs(out, 0, img, cells)
    for k, (b, c) in enumerate(zip(img.tolist(), cells.tolist())):
        i, j = divmod(c, s)
        want = out["masks_y"][0][b, i].sigmoid() * out["masks_x"][0][b, j].sigmoid()
        assert torch.allclose(got[k], want)
    up = head.mask_probs(out, 0, img, cells, out_size=(32, 32))
    assert up.shape == (3, 32, 32)


def test_head_output_shapes():
    feats = _feats()
    solo = SOLOHead(**HEAD_KW)(feats)
    assert [tuple(x.shape) for x in solo["cate"]] == [(2, 3, s, s) for s in (5, 4, 3, 2, 2)]
    # S^2 masks per level at half the level's stride
    assert [tuple(x.shape) for x in solo["masks"]] == [
        (2, 25, 16, 16), (2, 16, 16, 16), (2, 9, 8, 8), (2, 4, 4, 4), (2, 4, 4, 4)
    ]  # fmt: skip
    v2 = SOLOv2Head(**HEAD_KW, mask_in_features=["p2", "p3", "p4", "p5"], mask_in_channels=32,
                    mask_channels=32, num_masks=64)  # fmt: skip
    fpn = {f"p{i + 2}": torch.randn(2, 32, 16 // 2**i, 16 // 2**i) for i in range(4)}
    out = v2(feats, fpn)
    assert [tuple(x.shape) for x in out["kernels"]] == [(2, 64, s, s) for s in (5, 4, 3, 2, 2)]
    assert out["mask_feat"].shape == (2, 64, 16, 16)
    probs = v2.mask_probs(out, 1, torch.tensor([1, 0]), torch.tensor([3, 15]))
    k = out["kernels"][1][1, :, 0, 3]
    assert torch.allclose(probs[0], torch.einsum("e,ehw->hw", k, out["mask_feat"][1]).sigmoid())


def test_unknown_head_name_is_an_error(tmp_path):
    from instseg_d2.engine import build_config
    from solo_d2 import build_solo_head

    cfg = build_config("", ["MODEL.SOLO.HEAD_NAME", "SOLOv3Head", "DATASETS.TRAIN",
                            "('coco_2017_train',)"])  # fmt: skip
    with pytest.raises(ValueError, match="MODEL.SOLO.HEAD_NAME='SOLOv3Head'.*SOLOv2Head"):
        build_solo_head(cfg, {f"p{i}": ShapeSpec(channels=256, stride=2**i) for i in range(2, 7)})


# --------------------------------------------------------------------------- losses
def test_losses_hand_computed():
    # one level, S = 1, C = 2, one image; the cell is positive with class 1
    logits = torch.tensor([[0.0, math.log(3.0)]]).view(1, 2, 1, 1)  # p = 0.5, 0.75
    labels = torch.tensor([[[1]]])
    # focal terms: class 0, t = 0: (1 - a) p^2 (-log(1 - p)) = 0.75 * 0.25 * log 2
    #              class 1, t = 1: a (1 - p)^2 (-log p) = 0.25 * 0.0625 * log(4/3)
    focal = 0.75 * 0.25 * math.log(2) + 0.25 * 0.0625 * math.log(4 / 3)
    assert category_loss([logits], [labels], 2).item() == pytest.approx(focal / 2)  # / (1 + 1)
    probs = torch.tensor([[[0.5, 1.0], [0.0, 0.5]]])
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # dice: 2 * 1.5 / (1.5 + 0.001 + 2 + 0.001)
    dice = 1 - 3.0 / 3.502
    losses = solo_losses([logits], [labels], [probs], [target], 2)
    assert losses["loss_ins"].item() == pytest.approx(3.0 * dice)
    assert losses["loss_cate"].item() == pytest.approx(focal / 2)
    # dice is averaged over every positive of every level
    two = solo_losses([logits], [labels], [probs, target], [target, target], 2)
    assert two["loss_ins"].item() == pytest.approx(3.0 * (dice + 1 - 4 / 4.002) / 2)
    # no positive: loss_ins is 0, loss_cate is the plain focal sum
    none = solo_losses([logits], [torch.tensor([[[2]]])], [], [], 2)
    assert none["loss_ins"].item() == 0.0
    bg = 0.75 * 0.25 * math.log(2) + 0.75 * 0.75**2 * math.log(4)
    assert none["loss_cate"].item() == pytest.approx(bg)


# --------------------------------------------------------------------------- whole model
class _TinyBackbone(nn.Module):
    """p2..p6 of 32 channels at strides 4..64, cheap enough for unit tests."""

    size_divisibility = 32

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, stride=4, padding=1)
        self.downs = nn.ModuleList([nn.Conv2d(32, 32, 3, stride=2, padding=1) for _ in range(4)])

    def forward(self, x):
        out = {"p2": torch.relu(self.stem(x))}
        for i, d in enumerate(self.downs):
            out[f"p{i + 3}"] = torch.relu(d(out[f"p{i + 2}"]))
        return out

    def output_shape(self):
        return {f"p{i}": ShapeSpec(channels=32, stride=2**i) for i in range(2, 7)}


def _tiny_model(head_name):
    torch.manual_seed(0)
    grids = [8, 6, 4, 3, 2]
    if head_name == "SOLOv2Head":
        head = SOLOv2Head(**{**HEAD_KW, "num_grids": grids}, mask_in_channels=32,
                          mask_in_features=["p2", "p3", "p4", "p5"], mask_channels=32,
                          num_masks=32)  # fmt: skip
    else:
        head = {"SOLOHead": SOLOHead, "DecoupledSOLOHead": DecoupledSOLOHead}[head_name](
            **{**HEAD_KW, "num_grids": grids}
        )
    post = SOLOPostProcessor(num_classes=3, num_grids=grids, min_mask_areas=[0, 0, 0, 0, 0],
                             score_thr=0.05)  # fmt: skip
    return SOLO(
        backbone=_TinyBackbone(), head=head, postprocessor=post,
        instance_in_features=["p2", "p3", "p4", "p5", "p6"], num_grids=grids,
        scale_ranges=[(1, 24), (12, 48), (24, 96), (48, 192), (96, 512)], sigma=0.2,
        num_classes=3, pixel_mean=[128.0] * 3, pixel_std=[64.0] * 3,
    )  # fmt: skip


@pytest.mark.parametrize("head_name", ["SOLOHead", "DecoupledSOLOHead", "SOLOv2Head"])
def test_training_steps_lower_the_loss_and_inference(head_name):
    model = _tiny_model(head_name)
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 255, (3, 64, 64), generator=g, dtype=torch.uint8)
    masks = torch.stack([_box_mask(64, 64, 8, 30, 6, 26), _box_mask(64, 64, 30, 60, 28, 62)])
    image[:, masks[0]] = 250
    image[:, masks[1]] = 5
    batch = [{"image": image, "instances": _instances(masks, [0, 2]), "height": 96, "width": 96}]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    model.train()
    for _ in range(10):
        losses = model(batch)
        assert set(losses) == {"loss_cate", "loss_ins"}
        history.append([losses["loss_ins"].item(), losses["loss_cate"].item()])
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    # SOLO's mask channels start at sigmoid = 0.01 (reference init), so its dice moves slowly
    assert history[-1][0] < history[0][0] and history[-1][1] < 0.5 * history[0][1], history
    model.eval()
    res = model(batch)[0]["instances"]
    assert res.image_size == (96, 96)  # resized to the original image size
    assert res.pred_masks.dtype == torch.bool and res.pred_masks.shape[1:] == (96, 96)
    assert len(res) <= 100 and (res.scores[:-1] >= res.scores[1:]).all()
    assert res.pred_boxes.tensor.shape == (len(res), 4)
    raw = model.inference(batch, do_postprocess=False)[0]["instances"]
    assert raw.image_size == (64, 64) and raw.pred_masks.shape[1:] == (64, 64)


def test_image_without_instances_trains():
    model = _tiny_model("SOLOv2Head").train()
    empty = _instances(torch.zeros(0, 64, 64, dtype=torch.bool), [])
    losses = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "instances": empty}])
    assert losses["loss_ins"].item() == 0.0 and losses["loss_ins"].requires_grad
    sum(losses.values()).backward()
    assert model.head.mask_branch.pred[0].weight.grad is not None


# --------------------------------------------------------------------------- configs, e2e
def test_config_level_mismatch_is_an_error():
    from instseg_d2.engine import build_config
    from detectron2.modeling import build_model

    cfg = build_config("configs/SOLO/shapes_SOLOv2_R_18.yaml",
                       ["MODEL.SOLO.NUM_GRIDS", "[40, 36, 24]", "MODEL.DEVICE", "cpu"])  # fmt: skip
    with pytest.raises(ValueError, match="MODEL.SOLO.NUM_GRIDS has 3 values for 5 levels"):
        build_model(cfg)


@pytest.mark.parametrize("variant", ["SOLO", "DecoupledSOLO", "SOLOv2"])
def test_end_to_end_tiny_shapes(tiny_shapes, tmp_path, repo_root, variant):
    from instseg_d2.testing import loss_history, train_and_evaluate

    # After 3 iterations scores and mask probabilities are still near their initial values
    # (category prior 0.01; SOLO masks 0.01): thresholds at 0 so that the evaluation gets
    # detections through the whole inference path (point NMS, Matrix NMS, resizing, boxes).
    opts = ["MODEL.SOLO.SCORE_THR", "0.0", "MODEL.SOLO.MASK_THR", "0.0",
            "MODEL.SOLO.UPDATE_THR", "0.0", "MODEL.SOLO.NMS_PRE", "50"]  # fmt: skip
    res = train_and_evaluate(
        f"{repo_root}/configs/SOLO/shapes_{variant}_R_18.yaml", str(tmp_path), opts
    )
    assert "segm" in res and "bbox" in res
    assert math.isfinite(res["segm"]["AP"]) and math.isfinite(res["bbox"]["AP"])
    assert len(loss_history(str(tmp_path), "loss_ins")) >= 1


# --------------------------------------------------------------------------- AdelaiDet loader
def _adelaidet_solov2_head_spec(num_classes=80, fpn=256, ch=512, convs=4, e=256, mask_ch=128):
    """Names and shapes of AdelaiDet's SOLOv2InsHead / SOLOv2MaskHead parameters (GN, R-50
    defaults), as its code builds them: towers are Sequential(conv, GroupNorm, ReLU) x convs,
    the kernel tower's first conv takes 2 coordinate channels more, mask-head level l has
    max(l, 1) blocks 'conv{j}' = Sequential(conv, GN, ReLU), level 3's first takes + 2."""
    spec = {}
    for tower, cin in (("cate_tower", fpn), ("kernel_tower", fpn + 2)):
        for k in range(convs):
            spec[f"ins_head.{tower}.{3 * k}.weight"] = (ch, cin if k == 0 else ch, 3, 3)
            spec[f"ins_head.{tower}.{3 * k + 1}.weight"] = (ch,)
            spec[f"ins_head.{tower}.{3 * k + 1}.bias"] = (ch,)
    spec.update({
        "ins_head.cate_pred.weight": (num_classes, ch, 3, 3),
        "ins_head.cate_pred.bias": (num_classes,),
        "ins_head.kernel_pred.weight": (e, ch, 3, 3),
        "ins_head.kernel_pred.bias": (e,),
    })  # fmt: skip
    for lvl in range(4):
        for j in range(max(lvl, 1)):
            cin = mask_ch if j else (fpn + 2 if lvl == 3 else fpn)
            pre = f"mask_head.convs_all_levels.{lvl}.conv{j}"
            spec[f"{pre}.0.weight"] = (mask_ch, cin, 3, 3)
            spec[f"{pre}.1.weight"] = spec[f"{pre}.1.bias"] = (mask_ch,)
    spec["mask_head.conv_pred.0.weight"] = (e, mask_ch, 1, 1)
    spec["mask_head.conv_pred.1.weight"] = spec["mask_head.conv_pred.1.bias"] = (e,)
    return spec


def test_adelaidet_solov2_checkpoint_loads(tmp_path, repo_root, checkpoint_log):
    from detectron2.modeling import build_model
    from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone

    from instseg_d2.engine import CheckpointMismatchError, InstSegCheckpointer, build_config
    from solo_d2.checkpoint import NotAdelaiDetSOLOv2Error, convert_reference_state_dict

    cfg = build_config(f"{repo_root}/configs/SOLO/SOLOv2_R_50_3x.yaml",
                       ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])  # fmt: skip
    model = build_model(cfg)
    # AdelaiDet's SOLOv2: self.backbone = detectron2's build_resnet_fpn_backbone (same names)
    ref = {f"backbone.{k}": tuple(v.shape) for k, v in
           build_resnet_fpn_backbone(cfg, ShapeSpec(channels=3)).state_dict().items()}  # fmt: skip
    ref.update(_adelaidet_solov2_head_spec())
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) for k, shape in ref.items()}
    # the published file, through the platform's strict (evaluation) checkpointer
    src = tmp_path / "SOLOv2_R50_3x.pth"
    torch.save({"model": state}, src)
    InstSegCheckpointer(model, strict=True).load(str(src))  # strict: nothing left missing
    sd = model.state_dict()
    assert len(sd) == len(ref)  # and nothing unexpected
    assert not any("not used by the model" in m for m in checkpoint_log)
    n_head = sum(k.startswith(("ins_head.", "mask_head.")) for k in ref)
    assert (
        f"recognised a checkpoint of AdelaiDet SOLOv2; renamed {n_head} keys" in checkpoint_log[-1]
    )
    assert torch.equal(sd["head.kernel_tower.0.weight"], state["ins_head.kernel_tower.0.weight"])
    assert torch.equal(sd["head.cate_branch.tower.10.bias"], state["ins_head.cate_tower.10.bias"])
    assert torch.equal(sd["head.mask_branch.levels.3.2.0.weight"],
                       state["mask_head.convs_all_levels.3.conv2.0.weight"])  # fmt: skip
    assert torch.equal(sd["head.mask_branch.pred.1.bias"], state["mask_head.conv_pred.1.bias"])
    # a key that fits no AdelaiDet name is refused, naming the file and the key
    torch.save({"model": {**state, "ins_head.extra.weight": torch.zeros(1)}}, src)
    with pytest.raises(CheckpointMismatchError, match="SOLOv2_R50_3x.pth.*ins_head.extra.weight"):
        InstSegCheckpointer(build_model(cfg)).load(str(src))
    with pytest.raises(NotAdelaiDetSOLOv2Error, match="no 'ins_head"):
        convert_reference_state_dict({"roi_heads.box_predictor.cls_score.weight": torch.zeros(1)})
