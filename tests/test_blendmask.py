"""BlendMask: blending == explicit weighted sum, semantic targets, losses by hand, end to end."""

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, Instances

from blendmask_d2 import Blender, ProtoNet, blend, thing_semantic_targets
from instseg_d2.testing import train_and_evaluate

SHAPES_CFG = "configs/BlendMask/shapes_BlendMask_R_18.yaml"


def test_blend_equals_explicit_weighted_sum():
    torch.manual_seed(0)
    r, k, m, s = 3, 4, 2, 4
    rois = torch.randn(r, k, s, s)
    attns = torch.randn(r, k * m * m)
    out = blend(rois, attns, attn_size=m, interp="nearest")
    assert out.shape == (r, s, s)
    for i in range(r):
        a = attns[i].view(k, m, m)
        for y in range(s):
            for x in range(s):
                logits = a[:, y * m // s, x * m // s]  # nearest: 2x2 -> 4x4 replicates
                w = torch.exp(logits) / torch.exp(logits).sum()  # softmax over the K bases
                want = sum(w[j] * rois[i, j, y, x] for j in range(k))
                assert out[i, y, x].item() == pytest.approx(want.item(), abs=1e-5)
    # bilinear attention: still a convex combination of the bases at every pixel
    out = blend(rois, attns, attn_size=m)
    assert (out <= rois.max(dim=1).values + 1e-6).all() and (
        out >= rois.min(dim=1).values - 1e-6
    ).all()


def _gt(boxes, classes, masks, size):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_classes = torch.tensor(classes)
    inst.gt_masks = BitMasks(masks)
    return inst


def test_thing_semantic_targets_on_the_fly():
    m = torch.zeros(2, 20, 18, dtype=torch.bool)
    m[0, :, :10] = True  # class 3, left part
    m[1, 8:, 8:] = True  # class 1, later in the annotations: on top where they overlap
    gt = _gt([[0, 0, 10, 20], [8, 8, 18, 20]], [3, 1], m, (20, 18))
    t = thing_semantic_targets(gt, (4, 4), stride=8)  # samples rows/cols 0, 8, 16, zero-padded
    assert t.tolist() == [[4, 4, 0, 0], [4, 2, 2, 0], [4, 2, 2, 0], [0, 0, 0, 0]]
    empty = _gt(torch.zeros(0, 4).tolist(), [], torch.zeros(0, 20, 18, dtype=torch.bool), (20, 18))
    assert thing_semantic_targets(empty, (3, 3), 8).sum() == 0


def test_semantic_loss_hand_computed():
    shapes = {f"p{i}": type("S", (), {"channels": 8, "stride": 2**i})() for i in (3, 4, 5)}
    proto = ProtoNet(input_shape=shapes, num_bases=4, convs_dim=8, norm="BN", num_classes=5)
    for p in proto.seg_head[-1].parameters():
        torch.nn.init.zeros_(p)  # uniform logits over the 6 labels: CE = ln 6
    feats = {
        "p3": torch.randn(2, 8, 4, 4),
        "p4": torch.randn(2, 8, 2, 2),
        "p5": torch.randn(2, 8, 1, 1),
    }
    m = torch.zeros(1, 32, 32, dtype=torch.bool)
    gt = _gt([[0, 0, 8, 8]], [2], m, (32, 32))
    loss = proto.semantic_loss(feats, [gt, gt])["loss_basis_sem"]
    assert loss.item() == pytest.approx(0.3 * math.log(6), rel=1e-5)
    assert proto(feats).shape == (2, 4, 8, 8)  # K bases at twice P3's resolution (stride 4)


def test_blender_loss_hand_computed():
    # Constant bases v: every blended logit is v (the attentions are convex weights). GT 0 is a
    # full box (target 1), GT 1 an empty mask (target 0); centre-ness targets 0.5 and 0.25.
    blender = Blender(resolution=8, attn_size=2, num_bases=4)
    v = 0.7
    bases = torch.full((1, 4, 16, 16), v)  # stride 4 for a 64 x 64 image
    m = torch.zeros(2, 64, 64, dtype=torch.bool)
    m[0, 8:40, 8:40] = True
    gt = _gt([[8, 8, 40, 40], [40, 40, 60, 60]], [0, 1], m, (64, 64))
    pos = Instances((0, 0))
    pos.gt_inds = torch.tensor([0, 1])
    pos.top_feats = torch.randn(2, 16)
    pos.gt_ctrs = torch.tensor([0.5, 0.25])
    loss = blender.loss(bases, pos, loss_denorm=0.75, gt_instances=[gt])["loss_mask"]
    want = (0.5 * F.softplus(torch.tensor(-v)) + 0.25 * F.softplus(torch.tensor(v))) / 0.75
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert blender.loss(bases, pos[[]], 1.0, [gt])["loss_mask"].item() == 0


def test_blender_inference_masks():
    blender = Blender(resolution=8, attn_size=2, num_bases=4)
    bases = torch.randn(2, 4, 16, 16)
    dets = []
    for n in (2, 0):
        d = Instances((64, 64))
        d.pred_boxes = Boxes(torch.tensor([[0.0, 0, 32, 32], [16, 16, 60, 50]])[:n])
        d.top_feat = torch.randn(n, 16)
        dets.append(d)
    dets = blender(bases, dets)
    assert dets[0].pred_masks.shape == (2, 1, 8, 8) and dets[1].pred_masks.shape == (0, 1, 8, 8)
    assert ((dets[0].pred_masks >= 0) & (dets[0].pred_masks <= 1)).all()


def test_blendmask_end_to_end_tiny(tiny_shapes, tmp_path, repo_root):
    res = train_and_evaluate(f"{repo_root}/{SHAPES_CFG}", str(tmp_path))
    assert set(res) == {"bbox", "segm", "boundary"}
    import json

    with open(tmp_path / "metrics.json") as f:
        rec = [json.loads(l) for l in f if "loss_mask" in l]
    assert {"loss_mask", "loss_basis_sem", "loss_fcos_cls", "loss_fcos_loc"} <= set(rec[-1])


def test_bad_config_values_are_named(tiny_shapes, repo_root, tmp_path):
    from instseg_d2.engine import Trainer
    from instseg_d2.testing import build_tiny_cfg

    cfg = build_tiny_cfg(
        f"{repo_root}/{SHAPES_CFG}", str(tmp_path), ["MODEL.BASIS_MODULE.IN_FEATURES", "['c3']"]
    )
    with pytest.raises(ValueError, match="MODEL.BASIS_MODULE.IN_FEATURES"):
        Trainer.build_model(cfg)
