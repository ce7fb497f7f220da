"""SparseInst units: matching, targets, losses, heads, inference, reference checkpoints."""

import itertools
import math

import pytest
import torch
from detectron2.structures import BitMasks, Instances

from sparseinst_d2.decoder import BaseIAMDecoder, GroupIAMDecoder, GroupIAMSoftDecoder
from sparseinst_d2.loss import SparseInstCriterion, mask_iou, target_masks
from sparseinst_d2.matcher import SparseInstMatcher
from sparseinst_d2.postprocess import masks_to_image, score_queries

BIG = 30.0  # a logit whose sigmoid is 1 (or 0) in float32


# ------------------------------------------------------------------------------- matching
def _brute_force(scores):
    """Best total over all one-to-one assignments of min(N, G) pairs, and its pairs."""
    n, g = scores.shape
    best, pairs = -1.0, None
    if n >= g:
        for rows in itertools.permutations(range(n), g):
            total = sum(scores[r, c] for c, r in enumerate(rows))
            if total > best:
                best, pairs = total, sorted(zip(rows, range(g)))
    else:
        for cols in itertools.permutations(range(g), n):
            total = sum(scores[r, c] for r, c in enumerate(cols))
            if total > best:
                best, pairs = total, sorted(zip(range(n), cols))
    return best, pairs


def test_score_matrix_hand_computed():
    # prediction 0: probabilities (1, 1, 0, 0); target 0: (1, 0, 0, 0); class prob 0.5
    m = SparseInstMatcher(alpha=0.8, beta=0.2, dice_eps=1e-4)
    pred = torch.tensor([[[BIG, BIG], [-BIG, -BIG]]])
    tgt = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    cls = torch.tensor([[0.0, -BIG]])
    c = m.score_matrix(pred, cls, tgt, torch.tensor([0]))
    dice = 2 * 1.0 / (2.0 + 1.0 + 1e-4)
    assert c.shape == (1, 1)
    assert c.item() == pytest.approx(dice**0.8 * 0.5**0.2, rel=1e-5)
    # the other class: probability sigmoid(-30)
    other = dice**0.8 * (1 / (1 + math.exp(BIG))) ** 0.2
    assert m.score_matrix(pred, cls, tgt, torch.tensor([1])).item() == pytest.approx(
        other, rel=1e-4
    )


@pytest.mark.parametrize("n,g,seed", [(3, 1, 0), (4, 2, 1), (5, 3, 2), (6, 4, 3), (2, 3, 4)])
def test_matcher_equals_brute_force(n, g, seed):
    gen = torch.Generator().manual_seed(seed)
    k, h, w = 3, 4, 5
    masks = torch.randn(2, n, h, w, generator=gen) * 3
    logits = torch.randn(2, n, k, generator=gen)
    tgts = [(torch.rand(g, h, w, generator=gen) > 0.5).float() for _ in range(2)]
    labels = [torch.randint(0, k, (g,), generator=gen) for _ in range(2)]
    m = SparseInstMatcher()
    out = m(masks, logits, tgts, labels)
    for b in range(2):
        scores = m.score_matrix(masks[b], logits[b], tgts[b], labels[b]).double()
        best, pairs = _brute_force(scores)
        rows, cols = out[b]
        assert len(rows) == min(n, g)
        assert scores[rows, cols].sum().item() == pytest.approx(best, rel=1e-9)
        assert sorted(zip(rows.tolist(), cols.tolist())) == pairs


def test_matcher_not_greedy_and_empty_image():
    # a hand-built case where the greedy choice (0->0, score 0.9) is wrong:
    # (0->1) + (1->0) = 0.8 + 0.85 beats (0->0) + (1->1) = 0.9 + 0.1
    scores = torch.tensor([[0.9, 0.8], [0.85, 0.1]])
    m = SparseInstMatcher()
    m.score_matrix = lambda *a: scores
    (rows, cols), (r2, c2) = m(
        torch.zeros(2, 2, 1, 1), torch.zeros(2, 2, 1), [torch.zeros(2, 1, 1), torch.zeros(0, 1, 1)],
        [torch.zeros(2, dtype=torch.long), torch.zeros(0, dtype=torch.long)],
    )  # fmt: skip
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    assert len(r2) == len(c2) == 0


# -------------------------------------------------------------------------------- targets
def test_target_masks_padded_and_bilinear():
    # an 8x8 image in a 8x12 padded batch, predictions at stride 4 (2x3). Bilinear
    # (align_corners False) samples output pixel i at input 4i+1.5: the mean of rows 4i+1, 4i+2.
    m = torch.zeros(1, 8, 8)
    m[0, :6, :6] = 1  # rows/cols 0-5
    inst = Instances((8, 8), gt_masks=BitMasks(m))
    (t,) = target_masks([inst], (8, 12), (2, 3))
    assert torch.allclose(t, torch.tensor([[[1.0, 0.5, 0.0], [0.5, 0.25, 0.0]]]))
    empty = Instances((8, 8), gt_masks=BitMasks(torch.zeros(0, 8, 8)))
    assert target_masks([empty], (8, 12), (2, 3))[0].shape == (0, 2, 3)


# --------------------------------------------------------------------------------- losses
def _focal(x, y, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-x))
    ce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    p_t = p * y + (1 - p) * (1 - y)
    a_t = alpha * y + (1 - alpha) * (1 - y)
    return a_t * ce * (1 - p_t) ** gamma


def test_losses_hand_computed():
    """One image, two queries, two classes, one object (class 1) on a 2x2 grid."""
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    tgt = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    outputs = {
        "pred_logits": torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]]),
        # query 0 looks like the object (+2 inside, -2 outside), query 1 is its opposite
        "pred_masks": torch.tensor([[[[2.0, -2.0], [-2.0, -2.0]], [[-2.0, 2.0], [2.0, 2.0]]]]),
        "pred_objectness": torch.tensor([[[0.5], [0.0]]]),
    }
    crit = SparseInstCriterion(matcher=SparseInstMatcher(), num_classes=2)
    losses = crit(outputs, [tgt], [torch.tensor([1])])

    ce = sum(_focal(x, y) for x, y in [(0.0, 0), (1.0, 1), (-1.0, 0), (0.0, 0)])
    bce = math.log(1 + math.exp(-2.0))  # every pixel of query 0 is right by a logit of 2
    p_in, p_out = sig(2.0), sig(-2.0)
    dice = 1 - 2 * p_in / (p_in**2 + 3 * p_out**2 + 1.0 + 1e-4)
    iou = 1 / (1 + 1e-6)  # binarised prediction == target
    obj = -(iou * math.log(sig(0.5)) + (1 - iou) * math.log(1 - sig(0.5)))
    assert losses["loss_ce"].item() == pytest.approx(2.0 * ce, rel=1e-5)
    assert losses["loss_mask"].item() == pytest.approx(5.0 * bce, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(2.0 * dice, rel=1e-4)
    assert losses["loss_objectness"].item() == pytest.approx(1.0 * obj, rel=1e-5)


def test_losses_without_objects_and_gradients():
    crit = SparseInstCriterion(matcher=SparseInstMatcher(), num_classes=2)
    outputs = {
        "pred_logits": torch.zeros(1, 3, 2, requires_grad=True),
        "pred_masks": torch.zeros(1, 3, 2, 2, requires_grad=True),
        "pred_objectness": torch.zeros(1, 3, 1, requires_grad=True),
    }
    losses = crit(outputs, [torch.zeros(0, 2, 2)], [torch.zeros(0, dtype=torch.long)])
    # all 6 logits are negatives, normaliser clamped to 1
    assert losses["loss_ce"].item() == pytest.approx(2.0 * 6 * _focal(0.0, 0), rel=1e-5)
    assert losses["loss_mask"].item() == losses["loss_dice"].item() == 0.0
    sum(losses.values()).backward()  # every output is in the graph
    assert outputs["pred_logits"].grad.abs().sum() > 0


def test_mask_iou_thresholds():
    logits = torch.tensor([[BIG, -0.3, -BIG, -BIG]])  # sigmoid(-0.3) = 0.43 >= 0.4: inside
    tgt = torch.tensor([[1.0, 0.5, 0.0, 1.0]])  # 0.5 is not > 0.5: outside
    # prediction {0, 1}, target {0, 3}: IoU 1/3
    assert mask_iou(logits, tgt).item() == pytest.approx(1 / 3, rel=1e-5)


# ---------------------------------------------------------------------------------- heads
def _decoder(cls, groups=4, n=6, k=3):
    from detectron2.config import get_cfg

    from sparseinst_d2 import add_sparseinst_config

    cfg = get_cfg()
    add_sparseinst_config(cfg)
    d = cfg.MODEL.SPARSE_INST.DECODER
    d.NUM_MASKS, d.NUM_CLASSES, d.GROUPS, d.KERNEL_DIM = n, k, groups, 8
    d.INST.DIM, d.INST.CONVS, d.MASK.DIM, d.MASK.CONVS = 16, 2, 12, 2
    return cls(cfg, 10)


@pytest.mark.parametrize(
    "cls,groups,fc_dim,iam_out",
    [(BaseIAMDecoder, 4, None, 6), (GroupIAMDecoder, 4, 64, 24), (GroupIAMDecoder, 2, 32, 12),
     (GroupIAMSoftDecoder, 8, 128, 48)],
)  # fmt: skip
def test_decoder_variants_and_shapes(cls, groups, fc_dim, iam_out):
    dec = _decoder(cls, groups)
    ib = dec.inst_branch
    assert ib.iam_conv.out_channels == iam_out and ib.iam_conv.in_channels == 16
    assert (ib.fc is None) == (fc_dim is None)
    if fc_dim:
        assert ib.iam_conv.groups == groups and ib.fc.in_features == fc_dim
    assert (ib.softmax_bias is not None) == (cls is GroupIAMSoftDecoder)
    out = dec(torch.randn(2, 10, 5, 7))
    assert out["pred_logits"].shape == (2, 6, 3)
    assert out["pred_masks"].shape == (2, 6, 10, 14)  # stride 8 -> 4
    assert out["pred_objectness"].shape == (2, 6, 1)
    assert out["pred_iam"].shape == (2, iam_out, 5, 7)
    # initial class probability is the prior 0.01 (bias), up to the small random weights
    assert out["pred_logits"].sigmoid().mean().item() == pytest.approx(0.01, abs=0.005)


def test_group_features_are_per_instance():
    """G-IAM: channel g*N + n of F_iam is group g of instance n; instance n's feature is the
    concatenation of its G aggregated features (so changing another instance's maps leaves it)."""
    dec = _decoder(GroupIAMDecoder, groups=2, n=3)
    ib = dec.inst_branch
    x = torch.randn(1, 12, 4, 4)
    with torch.no_grad():
        ref = ib(x)[0]
        ib.iam_conv.bias[[1, 3 + 1]] += 5.0  # both maps of instance 1
    with torch.no_grad():
        new = ib(x)[0]
    assert torch.equal(new[0, [0, 2]], ref[0, [0, 2]])
    assert not torch.allclose(new[0, 1], ref[0, 1])


def test_bad_decoder_name_and_groups():
    from instseg_d2.engine import build_config
    from sparseinst_d2.decoder import build_sparseinst_decoder

    cfg = build_config("", ["MODEL.SPARSE_INST.DECODER.NAME", "Nope", "DATASETS.TRAIN", "()",
                            "DATASETS.TEST", "('coco_2017_val',)"])  # fmt: skip
    with pytest.raises(KeyError, match="DECODER.NAME=.Nope. is not registered.*GroupIAMDecoder"):
        build_sparseinst_decoder(cfg, 8)
    cfg.MODEL.SPARSE_INST.DECODER.NAME = "GroupIAMDecoder"
    cfg.MODEL.SPARSE_INST.DECODER.GROUPS = 0
    with pytest.raises(ValueError, match="GROUPS=0"):
        build_sparseinst_decoder(cfg, 8)


# ------------------------------------------------------------------------------ inference
def test_scores_threshold_and_maskness():
    cls = torch.tensor([[0.0, 2.0], [-BIG, -BIG], [1.0, -1.0]])
    obj = torch.tensor([[0.0], [0.0], [BIG]])
    masks = torch.logit(torch.tensor([[[0.9, 0.3]], [[0.9, 0.9]], [[0.6, 0.5]]]))
    scores, labels, probs, keep = score_queries(cls, masks, obj, 0.005, 0.45, 100)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert keep.tolist() == [True, False, True]  # query 1: p = 0 < threshold
    assert labels[keep].tolist() == [1, 0]
    # maskness: mean probability over pixels > 0.45: query 0 {0.9}, query 2 {0.6, 0.5}
    assert scores[0].item() == pytest.approx(math.sqrt(s(2.0) * 0.5) * 0.9, rel=1e-5)
    assert scores[2].item() == pytest.approx(math.sqrt(s(1.0)) * 0.55, rel=1e-5)
    assert probs.shape == (3, 1, 2)
    # a detection limit keeps the highest sqrt(p * obj)
    _, labels2, _, _ = score_queries(cls, masks, obj, 0.005, 0.45, 1)
    assert labels2.tolist() == [0]  # query 2 (sqrt(s(1)) = 0.855) beats query 0 (0.666)


def test_masks_to_image_crop_and_resize():
    probs = torch.zeros(1, 2, 3)
    probs[0, 0, 0] = 1.0  # top-left cell of a 8x12 padded input (stride 4)
    m = masks_to_image(probs, (8, 12), (8, 10), (8, 10), 0.45)
    assert m.shape == (1, 8, 10) and m.dtype == torch.bool
    assert m[0, :2, :2].all() and not m[0, 4:].any() and not m[0, :, 6:].any()
    assert masks_to_image(probs, (8, 12), (8, 10), (16, 20), 0.45).shape == (1, 16, 20)


# ----------------------------------------------------------------- reference checkpoints
def _reference_giam_r50_state_dict(backbone_shapes):
    """Names and shapes of the reference's published R-50 G-IAM model, from its code
    (sparseinst/encoder.py, decoder.py: 256 channels, 100 masks, 4 groups, 80 classes,
    kernels 128). The backbone is detectron2's ResNet-50, named as here."""
    shapes = {f"backbone.{k}": s for k, s in backbone_shapes.items()}
    for j, c in enumerate([2048, 1024, 512]):  # fpn_laterals[0] is C5
        shapes[f"encoder.fpn_laterals.{j}.weight"] = (256, c, 1, 1)
        shapes[f"encoder.fpn_outputs.{j}.weight"] = (256, 256, 3, 3)
        shapes[f"encoder.fpn_laterals.{j}.bias"] = shapes[f"encoder.fpn_outputs.{j}.bias"] = (256,)
    for j in range(4):  # PPM stages: Sequential(AdaptiveAvgPool2d, Conv2d(256, 64, 1))
        shapes[f"encoder.ppm.stages.{j}.1.weight"] = (64, 256, 1, 1)
        shapes[f"encoder.ppm.stages.{j}.1.bias"] = (64,)
    shapes.update({
        "encoder.ppm.bottleneck.weight": (256, 512, 1, 1), "encoder.ppm.bottleneck.bias": (256,),
        "encoder.fusion.weight": (256, 768, 1, 1), "encoder.fusion.bias": (256,),
        "decoder.inst_branch.iam_conv.weight": (400, 64, 3, 3),
        "decoder.inst_branch.iam_conv.bias": (400,),
        "decoder.inst_branch.fc.weight": (1024, 1024), "decoder.inst_branch.fc.bias": (1024,),
        "decoder.inst_branch.cls_score.weight": (80, 1024),
        "decoder.inst_branch.cls_score.bias": (80,),
        "decoder.inst_branch.mask_kernel.weight": (128, 1024),
        "decoder.inst_branch.mask_kernel.bias": (128,),
        "decoder.inst_branch.objectness.weight": (1, 1024),
        "decoder.inst_branch.objectness.bias": (1,),
        "decoder.mask_branch.projection.weight": (128, 256, 1, 1),
        "decoder.mask_branch.projection.bias": (128,),
    })  # fmt: skip
    for branch, convs in (("inst_branch", "inst_convs"), ("mask_branch", "mask_convs")):
        for i in (0, 2, 4, 6):  # nn.Sequential(conv, ReLU, conv, ReLU, ...)
            shapes[f"decoder.{branch}.{convs}.{i}.weight"] = (256, 258 if i == 0 else 256, 3, 3)
            shapes[f"decoder.{branch}.{convs}.{i}.bias"] = (256,)
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def test_reference_checkpoint_loads_exactly(tmp_path, repo_root, checkpoint_log):
    from detectron2.modeling import build_backbone, build_model

    from instseg_d2.engine import InstSegCheckpointer, build_config
    from sparseinst_d2 import convert_reference_state_dict

    cfg = build_config(
        f"{repo_root}/configs/SparseInst/SparseInst_GIAM_R_50_608.yaml",
        ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""],
    )
    model = build_model(cfg)
    backbone = {k: tuple(v.shape) for k, v in build_backbone(cfg).state_dict().items()}
    ref = _reference_giam_r50_state_dict(backbone)
    path = str(tmp_path / "sparse_inst_r50_giam.pth")
    torch.save({"model": ref, "iteration": 269999}, path)

    # strict: a parameter of the model missing from the file is an error
    InstSegCheckpointer(model, strict=True).load(path)
    mine = model.state_dict()
    converted = convert_reference_state_dict(ref)
    assert sorted(converted) == sorted(mine)  # no missing, no unexpected key
    assert not any("not used by the model" in m for m in checkpoint_log)
    renamed = sum(k.startswith(("encoder.fpn_", "encoder.ppm.stages", "decoder.inst_branch.inst_",
                                "decoder.mask_branch.mask_")) for k in ref)  # fmt: skip
    assert checkpoint_log[-1] == (
        f"Checkpoint {path!r}: recognised a checkpoint of hustvl/SparseInst; renamed {renamed} keys"
    )
    assert all(torch.equal(mine[k], v) for k, v in converted.items())
    enc, dec = model.encoder, model.decoder
    assert torch.equal(enc.lateral_convs[2].weight, ref["encoder.fpn_laterals.0.weight"])
    assert torch.equal(enc.output_convs[0].bias, ref["encoder.fpn_outputs.2.bias"])
    assert torch.equal(enc.ppm.convs[3].weight, ref["encoder.ppm.stages.3.1.weight"])
    assert torch.equal(
        dec.inst_branch.convs[1].weight, ref["decoder.inst_branch.inst_convs.2.weight"]
    )
    assert torch.equal(dec.mask_branch.convs[3].bias, ref["decoder.mask_branch.mask_convs.6.bias"])
    assert torch.equal(dec.inst_branch.fc.weight, ref["decoder.inst_branch.fc.weight"])
    name = "backbone.res5.2.conv3.norm.running_var"
    assert torch.equal(model.state_dict()[name], ref[name])


def test_converter_refuses_other_models():
    from sparseinst_d2 import convert_reference_state_dict

    sd = {
        "encoder.fpn_laterals.0.weight": torch.zeros(1),
        "roi_heads.box_predictor.w": torch.zeros(1),
    }
    with pytest.raises(ValueError, match="roi_heads.box_predictor.w"):
        convert_reference_state_dict(sd)
    with pytest.raises(ValueError, match="no 'decoder.inst_branch"):
        convert_reference_state_dict({"encoder.fpn_laterals.0.weight": torch.zeros(1),
                                      "backbone.stem.conv1.weight": torch.zeros(1)})  # fmt: skip
