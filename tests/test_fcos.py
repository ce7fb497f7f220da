"""FCOS: target assignment on hand-built boxes, losses and inference against hand-computed values."""

import math

import pytest
import torch
from detectron2.structures import BitMasks, Boxes, ImageList, Instances

from instseg_d2.layers import compute_locations
from instseg_d2.modeling import FCOS, FCOSHead
from instseg_d2.modeling.fcos import ctrness_targets, fcos_targets, ltrb_iou, predict_instances
from instseg_d2.modeling.fcos.targets import size_ranges
from instseg_d2.testing import train_and_evaluate

STRIDES = [8, 16]


def _gt(boxes, classes, size=(64, 64), masks=None):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    if masks is not None:
        inst.gt_masks = BitMasks(masks)
    return inst


def _locations(size=64):
    return [compute_locations(size // s, size // s, s) for s in STRIDES]


def _targets(gts, center_mode="box", center_sample=True, soi=(32,)):
    return fcos_targets(
        _locations(), gts, STRIDES, soi, num_classes=3, radius=1.5,
        center_sample=center_sample, center_mode=center_mode,
    )  # fmt: skip


def _positives(t, image=0):
    """{(level, x, y): (gt_ind, label, reg_targets)} of the positive locations of one image."""
    out = {}
    for i in (t["labels"] != 3).nonzero().squeeze(1).tolist():
        if t["im_inds"][i] == image:
            x, y = t["locations"][i].tolist()
            out[(t["fpn_levels"][i].item(), x, y)] = (
                t["gt_inds"][i].item(),
                t["labels"][i].item(),
                t["reg_targets"][i].tolist(),
            )
    return out


def test_size_ranges():
    assert size_ranges([64, 128]) == [(-1.0, 64.0), (64.0, 128.0), (128.0, 1e8)]


def test_assignment_level_by_size_and_regression_targets():
    # Small box (16 px) -> P3 (max(l,t,r,b) <= 32); the 64-px box -> P4 (every P3 location
    # has max distance > 32). Centre sampling: 1.5 strides around the centre, inside the box.
    t = _targets([_gt([[8, 8, 24, 24], [0, 0, 64, 64]], [0, 2])])
    pos = _positives(t)
    small = {k for k, v in pos.items() if v[0] == 0}
    big = {k for k, v in pos.items() if v[0] == 1}
    assert small == {(0, 12.0, 12.0), (0, 20.0, 12.0), (0, 12.0, 20.0), (0, 20.0, 20.0)}
    # P4 locations are 8, 24, 40, 56; the sampling box is 32 +- 24 = (8, 56), strictly inside
    assert big == {(1, 24.0, 24.0), (1, 40.0, 24.0), (1, 24.0, 40.0), (1, 40.0, 40.0)}
    assert pos[(0, 12.0, 12.0)][1] == 0 and pos[(1, 24.0, 24.0)][1] == 2
    # regression targets (l, t, r, b) / stride
    assert pos[(0, 12.0, 20.0)][2] == pytest.approx([4 / 8, 12 / 8, 12 / 8, 4 / 8])
    assert pos[(1, 24.0, 40.0)][2] == pytest.approx([24 / 16, 40 / 16, 40 / 16, 24 / 16])
    # layout: level-first, then image, then row-major locations
    assert t["labels"].shape == (64 + 16,) and t["reg_targets"].shape == (80, 4)
    assert t["fpn_levels"][:64].eq(0).all() and t["fpn_levels"][64:].eq(1).all()


def test_assignment_ambiguity_takes_min_area():
    # Both boxes are P3 objects; the 4 locations inside both go to the smaller one.
    t = _targets([_gt([[0, 0, 30, 30], [8, 8, 24, 24]], [1, 0])])
    pos = _positives(t)
    big_region = {(0, x, y) for x in (4.0, 12.0, 20.0) for y in (4.0, 12.0, 20.0)}  # 15 +- 12
    small_region = {(0, x, y) for x in (12.0, 20.0) for y in (12.0, 20.0)}
    assert set(pos) == big_region
    assert {k for k, v in pos.items() if v[0] == 1} == small_region
    assert all(pos[k][1] == 1 for k in big_region - small_region)
    assert pos[(0, 12.0, 12.0)][2] == pytest.approx([0.5, 0.5, 1.5, 1.5])  # to the small box


def test_center_sampling_vs_whole_box_and_mask_centre():
    gt = _gt([[0, 0, 30, 30]], [1])
    with_cs = set(_positives(_targets([gt])))
    without = set(_positives(_targets([gt], center_sample=False)))
    assert len(with_cs) == 9  # 15 +- 12 -> x, y in {4, 12, 20}
    assert without == {(0, x, y) for x in (4.0, 12.0, 20.0, 28.0) for y in (4.0, 12.0, 20.0, 28.0)}
    # The mask is the 10x10 top-left corner of the box: centre of mass (4.5, 4.5), so the
    # sampling box is (0, 0, 16.5, 16.5) instead of (3, 3, 27, 27).
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    m[0, :10, :10] = True
    gt_m = _gt([[0, 0, 30, 30]], [1], masks=m)
    by_mask = set(_positives(_targets([gt_m], center_mode="mask")))
    assert by_mask == {(0, x, y) for x in (4.0, 12.0) for y in (4.0, 12.0)}
    assert set(_positives(_targets([gt_m], center_mode="box"))) == with_cs
    # an empty mask falls back to the box centre
    gt_e = _gt([[0, 0, 30, 30]], [1], masks=torch.zeros(1, 64, 64, dtype=torch.bool))
    assert set(_positives(_targets([gt_e], center_mode="mask"))) == with_cs


def test_assignment_batch_offsets_and_empty_image():
    gts = [_gt([[8, 8, 24, 24]], [0]), _gt([], []), _gt([[0, 0, 64, 64], [8, 8, 24, 24]], [1, 2])]
    t = _targets(gts)
    assert set(v[0] for v in _positives(t, 0).values()) == {0}
    assert _positives(t, 1) == {}
    assert set(v[0] for v in _positives(t, 2).values()) == {1, 2}  # offset by image 0's one GT
    assert (t["gt_inds"][t["labels"] == 3] == -1).all()
    with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
        _targets(gts, soi=(32, 64))


def test_ltrb_iou_and_ctrness_hand_computed():
    pred = torch.tensor([[1.0, 1, 1, 1], [0, 0, 2, 2]])
    tgt = torch.tensor([[1.0, 1, 3, 1], [2, 2, 0, 0]])
    ious, gious = ltrb_iou(pred, tgt)
    # 1: areas 4 and 8, intersection 4, union 8, enclosing 8 -> IoU (4+1)/(8+1)
    # 2: boxes on opposite diagonals of the location: areas 4, no intersection, union 8,
    #    enclosing 4 x 4 = 16
    assert ious.tolist() == pytest.approx([5 / 9, 1 / 9])
    assert gious.tolist() == pytest.approx([5 / 9, 1 / 9 - 8 / 16])
    c = ctrness_targets(torch.tensor([[1.0, 2, 3, 4], [2, 2, 2, 2]]))
    assert c.tolist() == pytest.approx([math.sqrt(1 / 3 * 2 / 4), 1.0])


def _fcos(num_classes=2, strides=(8,), soi=(), **kw):
    head = FCOSHead(
        input_shape=[type("S", (), {"channels": 32})()] * len(strides),
        num_classes=num_classes, num_cls_convs=1, num_box_convs=1, norm="GN",
    )  # fmt: skip
    return FCOS(
        head=head, in_features=[f"p{i}" for i in range(len(strides))], strides=list(strides),
        num_classes=num_classes, sizes_of_interest=list(soi), center_sample_mode="box", **kw,
    )  # fmt: skip


def test_losses_hand_computed():
    # One level (stride 8, range (-1, inf)), a 2x2 map: locations (4,4) (12,4) (4,12) (12,12).
    # GT box (0, 0, 16, 8) of class 1: positives (4,4) and (12,4), targets (.5,.5,1.5,.5) and
    # (1.5,.5,.5,.5), centre-ness sqrt(1/3) both.
    fcos = _fcos()
    fcos.train()
    loc = [compute_locations(2, 2, 8)]
    logits = [torch.zeros(1, 2, 2, 2)]  # p = 0.5 everywhere
    reg = torch.zeros(1, 4, 2, 2)
    reg[0, :, 0, 0] = torch.tensor([0.5, 0.5, 1.5, 0.5])  # exact
    reg[0, :, 0, 1] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # IoU (1+1)/(2+1) = GIoU
    ctr = [torch.zeros(1, 1, 2, 2)]
    extras, losses = fcos.losses(loc, logits, [reg], ctr, [], [_gt([[0, 0, 16, 8]], [1], (16, 16))])
    ln2 = math.log(2)
    focal_pos, focal_neg = 0.25 * 0.5**2 * ln2, 0.75 * 0.5**2 * ln2
    assert losses["loss_fcos_cls"].item() == pytest.approx((2 * focal_pos + 6 * focal_neg) / 2)
    assert losses["loss_fcos_loc"].item() == pytest.approx((1 - 2 / 3) / 2)  # equal weights
    assert losses["loss_fcos_ctr"].item() == pytest.approx(ln2)  # BCE(logit 0) = ln 2
    pos = extras["instances"]
    assert pos.gt_inds.tolist() == [0, 0] and pos.labels.tolist() == [1, 1]
    assert pos.gt_ctrs.tolist() == pytest.approx([math.sqrt(1 / 3)] * 2)
    assert extras["loss_denorm"] == pytest.approx(2 * math.sqrt(1 / 3))
    # no GT at all: zero box losses, still differentiable
    _, losses = fcos.losses(loc, logits, [reg.requires_grad_()], ctr, [], [_gt([], [], (16, 16))])
    assert losses["loss_fcos_loc"].item() == 0 and losses["loss_fcos_cls"].item() > 0
    sum(losses.values()).backward()


def test_inference_decode_threshold_nms_topk():
    loc = [compute_locations(2, 2, 8)]
    big = 6.0
    logits = torch.full((1, 2, 2, 2), -big)
    logits[0, 1, 0, 0] = big  # class 1 at (4, 4)
    logits[0, 1, 0, 1] = big  # class 1 at (12, 4): same box after decoding -> NMS
    logits[0, 0, 1, 1] = 0.0  # class 0 at (12, 12): sigmoid 0.5
    reg = torch.ones(1, 4, 2, 2)
    reg[0, :, 0, 1] = torch.tensor([2.0, 1, 0, 1])  # from (12, 4): same box as from (4, 4)
    ctr = torch.zeros(1, 1, 2, 2)  # sigmoid 0.5
    top = torch.arange(4.0).view(1, 1, 2, 2)
    args = (loc, [logits], [reg], [ctr], [top], [8], [(16, 16)])
    (det,) = predict_instances(*args, score_thresh=0.3, thresh_with_ctr=False)
    s1 = math.sqrt(torch.sigmoid(torch.tensor(big)).item() * 0.5)
    assert det.scores.tolist() == pytest.approx([s1, math.sqrt(0.25)])
    assert det.pred_boxes.tensor.tolist()[0] == [-4.0, -4.0, 12.0, 12.0]  # loc -+ reg * 8
    assert det.pred_classes.tolist() == [1, 0]
    assert det.top_feat[:, 0].tolist() == [0.0, 3.0] and det.fpn_levels.tolist() == [0, 0]
    # thresholding after x centre-ness drops the 0.5 x 0.5 = 0.25 candidate
    (det,) = predict_instances(*args, score_thresh=0.3, thresh_with_ctr=True)
    assert len(det) == 1
    (det,) = predict_instances(*args, score_thresh=0.3, post_nms_topk=1)
    assert len(det) == 1 and det.pred_classes.item() == 1


def test_head_shapes_scale_and_top_module():
    fcos = _fcos(num_classes=3, strides=(8, 16), soi=(32,))
    fcos.eval()
    feats = {"p0": torch.randn(2, 32, 8, 8), "p1": torch.randn(2, 32, 4, 4)}
    top = torch.nn.Conv2d(32, 5, 1)
    logits, reg, ctr, tops = fcos.fcos_head([feats["p0"], feats["p1"]], top)
    assert [x.shape for x in logits] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [x.shape for x in tops] == [(2, 5, 8, 8), (2, 5, 4, 4)]
    assert all((r >= 0).all() for r in reg) and ctr[0].shape == (2, 1, 8, 8)
    assert fcos.fcos_head.cls_logits.bias[0].item() == pytest.approx(-math.log(99))
    assert fcos.fcos_head.bbox_pred.bias.abs().sum() == 0
    head = FCOSHead(
        input_shape=[type("S", (), {"channels": 32})()], num_classes=2, bbox_pred_bias_init=1.0
    )
    assert head.bbox_pred.bias.tolist() == [1.0] * 4
    fcos.fcos_head.scales[1].scale.data.fill_(0.0)
    assert fcos.fcos_head([feats["p0"], feats["p1"]])[1][1].abs().sum() == 0
    dets, _ = fcos(ImageList(torch.zeros(2, 3, 64, 64), [(64, 64)] * 2), feats, None, top)
    assert len(dets) == 2 and all(d.has("top_feat") for d in dets)
    with pytest.raises(ValueError, match="LOSS_NORMALIZER_CLS"):
        _fcos(loss_normalizer_cls="mean")
    with pytest.raises(ValueError, match="LOC_LOSS_TYPE"):
        _fcos(loc_loss_type="l1")
    with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
        _fcos(soi=(64,))


def test_bad_config_values_are_named(tiny_shapes, repo_root, tmp_path):
    from instseg_d2.engine import Trainer
    from instseg_d2.testing import build_tiny_cfg

    cfg_file = f"{repo_root}/configs/FCOS/shapes_FCOS_R_18.yaml"
    for key, value, match in [
        ("MODEL.FCOS.NORM", "LN", "MODEL.FCOS.NORM"),
        ("MODEL.FCOS.TOP_LEVELS", "3", "MODEL.FCOS.TOP_LEVELS"),
        ("MODEL.FCOS.CENTER_SAMPLE_MODE", "centroid", "CENTER_SAMPLE_MODE"),
        ("MODEL.FCOS.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']", "IN_FEATURES"),
    ]:
        cfg = build_tiny_cfg(cfg_file, str(tmp_path), [key, value])
        with pytest.raises(ValueError, match=match):
            Trainer.build_model(cfg)


def test_fcos_end_to_end_tiny(tiny_shapes, tmp_path, repo_root):
    res = train_and_evaluate(f"{repo_root}/configs/FCOS/shapes_FCOS_R_18.yaml", str(tmp_path))
    assert set(res) == {"bbox"} and "AP" in res["bbox"]
