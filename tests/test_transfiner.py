"""Mask Transfiner: targets, quadtree, losses, node features, refinement, end to end."""

import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.layers import ROIAlign
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from instseg_d2.testing import TINY_OPTS, train_and_evaluate
from transfiner_d2.losses import (
    boundary_loss,
    incoherence_loss,
    refine_loss,
    semantic_loss,
    smoothed_dice_loss,
)
from transfiner_d2 import nodes, timing
from transfiner_d2.mask_head import TransfinerFeatures, TransfinerMaskHead
from transfiner_d2.pooler import NodeFeaturePooler, first_per_image
from transfiner_d2.quadtree import all_nodes, node_masks, sample_train_nodes
from transfiner_d2.refine import QuadtreeRefiner, length_groups
from transfiner_d2.targets import (
    MaskTargets,
    boundary_map,
    incoherent_maps,
    roi_crops,
    semantic_targets,
)
from transfiner_d2.transformer import RefinementTransformer, SelfAttention, sine_position_embedding

SHAPES_CFG = "configs/Transfiner/shapes_Transfiner_R_18.yaml"


# ------------------------------------------------------------------------------- targets
def test_incoherent_gt_on_hand_built_square():
    # 16 x 16 mask with the square [4, 12)^2. Its 2x bilinear down-sampling is exact (the edges
    # fall on 2 x 2 block boundaries); up-sampling back blurs the pixels on both sides of each
    # edge (pixels 3, 4 and 11, 12 of each axis, plus the corners' neighbours), so the residue
    # is non-zero only near the edges. Down-sampled to 8 x 8 and set to 1 where >= 0.01, the
    # incoherent region is a 2-cell ring: cells 1, 2, 5, 6 of each axis around the square,
    # with the interior (3..4)^2 and the outer border coherent.
    m = torch.zeros(1, 16, 16)
    m[0, 4:12, 4:12] = 1
    inc = incoherent_maps(m, downsample=2, eps=0.01)[0]
    ring = torch.zeros(8, 8)
    ring[1:7, 1:7] = 1
    ring[3:5, 3:5] = 0
    assert torch.equal(inc, ring)
    # a constant mask has no incoherent region
    assert incoherent_maps(torch.ones(1, 16, 16))[0].abs().max() == 0
    # values below eps are kept, not zeroed (the reference's behaviour)
    m2 = torch.zeros(1, 16, 16)
    m2[0, 4:12, 5:12] = 1
    inc2 = incoherent_maps(m2)[0]
    assert 0 < inc2[1, 1] < 0.01 and inc2[1, 2] == 1

    # RoI crop of the incoherent map (boxes in image pixels, map at 1/2): the box of the
    # square's top-left quarter [4, 8)^2 covers cells 2, 3 of the map: ring cell 2 and
    # interior cell 3, so a 2 x 2 crop is [[1, 1], [1, 0]].
    crop = roi_crops(inc[None], torch.tensor([0]), torch.tensor([[4.0, 4.0, 8.0, 8.0]]), 2, 0.5)
    assert torch.equal(crop[0] >= 0.05, torch.tensor([[True, True], [True, False]]))


def test_boundary_map_cross_dilation_xor_erosion():
    m = torch.zeros(1, 6, 6, dtype=torch.bool)
    m[0, 1:4, 1:5] = True  # a 3 x 4 rectangle
    expected = torch.tensor(
        [[0, 1, 1, 1, 1, 0],
         [1, 1, 1, 1, 1, 1],
         [1, 1, 0, 0, 1, 1],
         [1, 1, 1, 1, 1, 1],
         [0, 1, 1, 1, 1, 0],
         [0, 0, 0, 0, 0, 0]], dtype=torch.bool)  # fmt: skip
    assert torch.equal(boundary_map(m)[0], expected)
    # the erosion treats the outside as foreground: a mask touching the border keeps it
    half = torch.zeros(1, 4, 4, dtype=torch.bool)
    half[0, :, :2] = True
    assert torch.equal(boundary_map(half)[0].int(), torch.tensor([[0, 1, 1, 0]] * 4))


def test_semantic_target_is_padded_union_at_p2():
    t = Instances((10, 13))
    masks = torch.zeros(2, 10, 13, dtype=torch.bool)
    masks[0, 0:2, 0:2] = True  # pixel (0, 0): p2 cell (0, 0)
    masks[1, 8:10, 12:13] = True  # pixel (8, 12): p2 cell (2, 3)
    t.gt_masks = BitMasks(masks)
    out = semantic_targets([t], (4, 4), stride=4)
    expected = torch.zeros(1, 1, 4, 4)
    expected[0, 0, 0, 0] = expected[0, 0, 2, 3] = 1
    assert torch.equal(out, expected)


def _instances(image_size, gt_masks, proposal_boxes, gt_index, gt_classes=None):
    tgt = Instances(image_size)
    tgt.gt_masks = BitMasks(gt_masks)
    tgt.gt_classes = torch.zeros(len(gt_masks), dtype=torch.long)
    prop = Instances(image_size)
    prop.proposal_boxes = Boxes(proposal_boxes)
    prop.gt_index = gt_index
    prop.gt_classes = gt_classes if gt_classes is not None else torch.zeros(len(gt_index)).long()
    prop.gt_masks = BitMasks(gt_masks[gt_index])
    return prop, tgt


def test_mask_targets_match_mask_rcnn_crops_across_images():
    torch.manual_seed(0)
    masks_a = torch.rand(2, 20, 30) > 0.5
    masks_b = torch.rand(1, 24, 16) > 0.5
    pa, ta = _instances((20, 30), masks_a, torch.tensor([[1.0, 2, 20, 18], [0, 0, 29, 19]]),
                        torch.tensor([1, 0]))  # fmt: skip
    pb, tb = _instances((24, 16), masks_b, torch.tensor([[3.0, 1, 15, 22]]), torch.tensor([0]))
    empty = Instances((8, 8))
    empty.gt_masks = BitMasks(torch.zeros(0, 8, 8, dtype=torch.bool))
    pe = Instances((8, 8))
    pe.proposal_boxes, pe.gt_index = Boxes(torch.zeros(0, 4)), torch.zeros(0, dtype=torch.long)
    tg = MaskTargets([pa, pe, pb], [ta, empty, tb], downsample=2, eps=0.01)
    for size in (14, 28):
        expected = torch.cat([p.gt_masks.crop_and_resize(p.proposal_boxes.tensor, size)
                              for p in (pa, pb)]).float()  # fmt: skip
        assert torch.equal(tg.crop_masks(size), expected)
    only_b = pb.gt_masks.crop_and_resize(pb.proposal_boxes.tensor, 14).float()
    assert torch.equal(tg.crop_masks(14, torch.tensor([2])), only_b)
    assert tg.crop_incoherent(28, 0.05).shape == (3, 28, 28)


# ------------------------------------------------------------------------------ quadtree
def _known_incoherence():
    inc = torch.zeros(2, 28, 28)
    inc[0, 0:3, 0:4] = 0.9  # 12 cells
    inc[0, 10:15, 10:15] = 0.3  # 25 cells
    inc[1, 5, 5] = 0.6  # 1 cell
    return inc


def test_quadtree_node_counts_per_level():
    inc = _known_incoherence()
    # training thresholds (0.125, 0.5, 0.5): level 0 takes both blocks; levels 1, 2 only the
    # children (4 / 16 per level-0 cell) of the 0.9 block
    train = node_masks(inc, [28, 56, 112], [0.125, 0.5, 0.5])
    assert [m.sum(1).tolist() for m in train] == [[37, 1], [48, 4], [192, 16]]
    # inference thresholds (1e-6, 0.125, 0.8)
    test = node_masks(inc, [28, 56, 112], [1e-6, 0.125, 0.8])
    assert [m.sum(1).tolist() for m in test] == [[37, 1], [148, 4], [192, 0]]
    # children of a level-0 cell (r, c) are the 2x2 / 4x4 blocks below it
    assert (
        train[1][1].view(56, 56)[10:12, 10:12].all()
        and train[2][1].view(112, 112)[20:24, 20:24].all()
    )


def test_train_node_sampling_cycles_and_drops_sparse_instances():
    masks = node_masks(_known_incoherence(), [28, 56, 112], [0.125, 0.5, 0.5])
    index, valid = sample_train_nodes(masks, num_nodes=150, min_nodes=10)
    assert valid.tolist() == [True, False]  # instance 1 has 1 / 4 / 16 nodes: < 10 at level 0
    for level, m in enumerate(masks):
        idx = index[level][0]
        n = int(m[0].sum())
        assert m[0][idx].all()  # only nodes are drawn
        if n >= 150:
            assert len(set(idx.tolist())) == 150  # without repetition
        else:  # every node, then the same order again
            assert set(idx.tolist()) == set(m[0].nonzero()[:, 0].tolist())
            assert torch.equal(idx[n:], idx[: 150 - n])


def test_all_nodes_padded_in_raster_order():
    mask = torch.tensor([[False, True, False, True], [False, False, False, False]])
    idx, valid = all_nodes(mask)
    assert idx.tolist() == [[1, 3], [0, 0]] and valid.tolist() == [[True, True], [False, False]]


# -------------------------------------------------------------------------------- losses
def test_loss_values_hand_computed():
    p = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # instance 0: (2 * 1.5 + 1) / (2 + 2 + 1) = 0.8; instance 1: (0 + 1) / (0 + 1) = 1
    assert smoothed_dice_loss(p, t).item() == pytest.approx((0.2 + 0.0) / 2)
    # logits 0: p = 0.5 everywhere, BCE = ln 2; dice (2 * 1 + 1) / (2 + 2 + 1) = 0.6
    logits = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert incoherence_loss(logits, target).item() == pytest.approx(0.4 + math.log(2), rel=1e-6)
    assert boundary_loss(logits, target).item() == pytest.approx(math.log(2), rel=1e-6)
    sem = torch.tensor([[[[2.0, -1.0]]]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert semantic_loss(sem, torch.tensor([[[[1.0, 0.0]]]])).item() == pytest.approx(expected)
    assert refine_loss(torch.tensor([[0.2, 0.9]]), torch.tensor([[0.0, 1.0]])).item() == (
        pytest.approx(0.15)
    )
    assert incoherence_loss(torch.zeros(0, 2, 2), torch.zeros(0, 2, 2)).item() == 0


def _refiner(channels, num_layers=1, dropout=0.1, **kwargs):
    transformer = RefinementTransformer(channels, dim=8, nheads=2, ffn_dim=16,
                                        num_layers=num_layers, dropout=dropout)  # fmt: skip
    return QuadtreeRefiner(transformer, **kwargs)


def _tiny_head(num_classes=3, channels=8, depth=3):
    from detectron2.layers import ShapeSpec

    refiner = _refiner(channels, depth=depth, num_layers=1, train_nodes_per_level=6,
                       train_min_nodes=2)  # fmt: skip
    return TransfinerMaskHead(ShapeSpec(channels=channels, height=4, width=4),
                              num_classes=num_classes, conv_dims=[4, 4], incoherent_dims=[4, 2],
                              refiner=refiner)  # fmt: skip


def test_mask_head_loss_values_and_weights():
    # zeroed predictors: every logit is 0 (p = 0.5), which makes each loss hand-computable
    head = _tiny_head()
    for pred in (head.predictor, head.incoherent_predictor, head.boundary_predictor,
                 head.refiner.transformer.output_fc2):  # fmt: skip
        torch.nn.init.zeros_(pred.weight), torch.nn.init.zeros_(pred.bias)
    # one image whose GT mask is the whole 16 x 16 image, and its box as the proposal:
    # the GT mask is constant, so the incoherent GT is empty and the GT crops are all ones
    prop, tgt = _instances((16, 16), torch.ones(1, 16, 16, dtype=torch.bool),
                           torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([0]))  # fmt: skip
    feats = TransfinerFeatures(
        roi=torch.randn(1, 8, 4, 4),
        refine_inds=torch.tensor([0]),
        node_features=lambda level, inds, cells: torch.randn(len(inds), cells.shape[1], 8),
    )
    with EventStorage():
        losses = head(feats, [prop], [tgt])
    ln2 = math.log(2)
    s = 8 * 8  # coarse mask cells (2 x pooler resolution 4)
    assert losses["loss_mask"].item() == pytest.approx(ln2, rel=1e-5)
    # dice with no GT: 1 - (0 + 1) / (0.5 * 64 + 0 + 1); weight 0.5
    dice = 1 - 1 / (0.5 * s + 1)
    assert losses["loss_incoherent"].item() == pytest.approx(0.5 * (dice + ln2), rel=1e-5)
    assert losses["loss_boundary"].item() == pytest.approx(ln2, rel=1e-5)  # weight 1.0
    assert losses["loss_refine"].item() == pytest.approx(0.5, rel=1e-5)  # |0.5 - 1|, weight 1
    (sum(losses.values())).backward()
    assert head.mask_fcn1.weight.grad is not None and head.incoherent_fcn1.weight.grad is not None


# ------------------------------------------------------------------ features and refinement
def test_sparse_node_features_equal_dense_roi_align():
    torch.manual_seed(0)
    scales = [1 / 4, 1 / 8, 1 / 16, 1 / 32]
    feats = [torch.randn(2, 3, 1024 // int(1 / s), 1024 // int(1 / s)) for s in scales]
    boxes = [
        Boxes(torch.tensor([[10.0, 20, 60, 75], [100, 50, 420, 380]])),  # FPN levels k = 2, 4
        Boxes(torch.tensor([[0.0, 0, 700, 640], [5, 5, 1020, 1010]])),  # k = 5, 6 -> 5
    ]
    pooler = NodeFeaturePooler([28, 56, 112], [1, 2, 3], scales)
    expected_levels = {  # RoI level k clamped to [2, 5], minus the offset, clamped at P2
        28: [2, 3, 4, 4], 56: [2, 2, 3, 3], 112: [2, 2, 2, 2],
    }  # fmt: skip
    inds = torch.tensor([0, 1, 2, 3])
    rois = torch.cat([torch.cat([torch.full((2, 1), float(i)), b.tensor], 1)
                      for i, b in enumerate(boxes)])  # fmt: skip
    for level, size in enumerate([28, 56, 112]):
        cells = torch.randint(0, size * size, (4, 40))
        sparse = pooler(feats, boxes, level, inds, cells)
        for i, fpn in enumerate(expected_levels[size]):
            dense = ROIAlign((size, size), 2.0**-fpn, 0, aligned=True)(
                feats[fpn - 2], rois[i : i + 1]
            )
            ref = dense[0].flatten(1)[:, cells[i]].t()
            torch.testing.assert_close(sparse[i], ref, atol=1e-4, rtol=1e-4)


def test_first_per_image():
    assert first_per_image([3, 0, 5], 2).tolist() == [0, 1, 3, 4]
    assert first_per_image([], 2).numel() == 0


def test_position_embedding_hand_values():
    pos = sine_position_embedding(2, 4)  # t_k = 1: [sin y, cos y, sin x, cos x], y, x in {pi, 2pi}
    cell01 = torch.tensor([math.sin(math.pi), math.cos(math.pi), math.sin(2 * math.pi), 1.0])
    torch.testing.assert_close(pos[1], cell01, atol=1e-5, rtol=0)
    assert pos.shape == (4, 4)


def test_self_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    mine = SelfAttention(16, 4).eval()
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    ref.load_state_dict(mine.state_dict())  # same parameter names and shapes
    qk, v = torch.randn(2, 7, 16), torch.randn(2, 7, 16)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    expected = ref(qk, qk, v, key_padding_mask=pad)[0]
    torch.testing.assert_close(mine(qk, v, pad), expected)
    mine.max_scores = 4 * 7 * 3  # one instance at a time, blocks of 3 queries (3, 3, 1)
    torch.testing.assert_close(mine(qk, v, pad), expected)


def _refiner_inputs(r=5, c=6, s0=8):
    torch.manual_seed(0)
    grids = [torch.randn(r, c, s0 * 2**level, s0 * 2**level) for level in range(3)]

    def node_features(level, inds, cells):
        return (
            grids[level][inds]
            .flatten(2)
            .gather(2, cells[:, None].expand(-1, c, -1))
            .transpose(1, 2)
        )

    return torch.rand(r, s0, s0), torch.rand(r, s0, s0) ** 3, torch.randn(r, c, 4, 4), node_features


def _hand_built_incoherence():
    """(6, 8, 8) incoherence maps whose node counts differ a lot under the thresholds
    (0.1, 0.3, 0.6) of levels 8 / 16 / 32 (a cell inherits its 8 x 8 ancestor's value)."""
    inc = torch.zeros(6, 8, 8)  # instance 0: no node (context tokens only)
    inc[1] = 1.0  # every cell: 64 / 256 / 1024 nodes
    inc[2, 3, 5] = 0.9  # one cell and its descendants: 1 / 4 / 16
    inc[3, :, :4] = 0.4  # left half, not above 0.6: 32 / 128 / 0
    inc[4, :, :4] = 0.4
    inc[4, 0, 4] = 0.4  # one cell more: 33 / 132 / 0
    inc[5, 6, 1] = 0.7  # as instance 2, another cell: 1 / 4 / 16
    return inc


def test_length_groups_bound_padding_and_size():
    lengths = torch.tensor([16, 1360, 37, 176, 181, 37])  # 16 context tokens + the nodes above
    groups = [g.tolist() for g in length_groups(lengths, 3, 0.1)]
    assert groups == [[1], [4, 3], [2, 5], [0]]  # 176 >= 0.9 * 181; 37 < 0.9 * 176
    assert [g.tolist() for g in length_groups(lengths, 1, 0.1)] == [[1], [4], [3], [2], [5], [0]]
    assert [g.tolist() for g in length_groups(lengths, 6, 0.0)] == [[1], [4], [3], [2, 5], [0]]


def test_grouped_refinement_equals_each_instance_alone():
    probs, _, roi, nf = _refiner_inputs(r=6)
    inc, inds = _hand_built_incoherence(), torch.arange(6)
    refiner = _refiner(6, num_layers=2, test_thresholds=(0.1, 0.3, 0.6), test_chunk_size=3).eval()
    calls = []  # (instances, tokens) of every transformer call
    hook = refiner.transformer.register_forward_hook(
        lambda module, args, out: calls.append(tuple(args[0].shape[:2]))
    )
    grouped = refiner.inference(probs, inc, roi, inds, nf)
    assert refiner.last_nodes == (6, [64 + 1 + 32 + 33 + 1, 256 + 4 + 128 + 132 + 4, 1024 + 32])
    # longest first; 176 tokens padded to 181 with instance 4; 2 and 5 unpadded; 0 alone
    assert calls == [(1, 1360), (2, 181), (2, 37), (1, 16)]
    hook.remove()
    single = [refiner.inference(probs[i : i + 1], inc[i : i + 1], roi, inds[i : i + 1], nf)
              for i in range(6)]  # fmt: skip
    assert grouped.shape == (6, 32, 32)
    torch.testing.assert_close(grouped, torch.cat(single), atol=1e-5, rtol=1e-5)
    # the same with the attention split into blocks of one query (memory-bounded path)
    for layer in refiner.transformer.layers:
        layer.self_attn.max_scores = 1
    blocked = refiner.inference(probs, inc, roi, inds, nf)
    torch.testing.assert_close(blocked, grouped, atol=1e-5, rtol=1e-5)


def test_refinement_of_no_instance():
    """No instance to refine (an image without detections, or TEST_MAX_INSTANCES 0): empty
    masks of the last level's size, no transformer call."""
    probs, inc, roi, nf = _refiner_inputs(r=2)
    refiner = _refiner(6, num_layers=1).eval()
    hook = refiner.transformer.register_forward_hook(lambda *a: pytest.fail("transformer ran"))
    out = refiner.inference(probs[:0], inc[:0], roi, torch.arange(0), nf)
    hook.remove()
    assert out.shape == (0, 32, 32)


def test_refinement_only_changes_nodes():
    probs, inc, roi, nf = _refiner_inputs(r=2)
    inc.zero_()
    inc[0, 2, 3] = 0.9  # instance 0: one incoherent cell; instance 1: none
    refiner = _refiner(6, num_layers=1, test_thresholds=(0.5, 0.5, 0.5)).eval()
    out = refiner.inference(probs, inc, roi, torch.arange(2), nf)
    up = probs[:, None]
    for size in (16, 32):  # 2x at a time, as the refinement
        up = F.interpolate(up, (size, size), mode="bilinear", align_corners=True)
    changed = (out - up[:, 0]).abs() > 1e-6
    assert not changed[1].any()  # nothing to refine: the upsampling only
    # cell (2, 3) of 8 x 8 and its children; the bilinear upsampling spreads the change by at
    # most a cell of the coarser level: rows 5..14 of 32
    assert changed[0].any() and not changed[0][:4].any() and not changed[0][16:].any()


def test_refiner_training_loss_decreases():
    probs, inc, roi, nf = _refiner_inputs(r=4)
    refiner = _refiner(6, num_layers=1, train_nodes_per_level=20, train_min_nodes=1, dropout=0.0)
    # learnable labels: the thresholded coarse probability, which every token sees
    gt = {s: (F.interpolate(probs[:, None], (s, s), mode="bilinear")[:, 0] > 0.5).float()
          for s in (4, 8, 16, 32)}  # fmt: skip
    opt = torch.optim.Adam(refiner.parameters(), lr=1e-2)
    torch.manual_seed(1)
    losses = []
    for _ in range(30):
        loss = refiner.training_loss(
            probs, inc, roi, torch.arange(4), nf, lambda s, sel: gt[s][sel]
        )
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


# ----------------------------------------------------------------------- config, end to end
def test_bad_config_names_the_key(tiny_shapes, repo_root):
    from detectron2.modeling import build_model

    from instseg_d2.testing import build_tiny_cfg

    cfg_file = os.path.join(repo_root, SHAPES_CFG)
    bad = ["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead"]
    with pytest.raises(ValueError, match="ROI_MASK_HEAD.NAME 'TransfinerMaskHead'"):
        build_model(build_tiny_cfg(cfg_file, "/tmp/unused", bad))
    bad = ["INPUT.MASK_FORMAT", "polygon"]
    with pytest.raises(ValueError, match="INPUT.MASK_FORMAT 'bitmask', got 'polygon'"):
        build_model(build_tiny_cfg(cfg_file, "/tmp/unused", bad))
    bad = ["MODEL.TRANSFINER.TEST_INCOHERENT_THRESH", "[0.1, 0.2, 0.3]"]  # depth 2
    with pytest.raises(ValueError, match="TEST_INCOHERENT_THRESH has 3 values"):
        build_model(build_tiny_cfg(cfg_file, "/tmp/unused", bad))


def test_end_to_end_train_and_eval(tiny_shapes, tmp_path, repo_root):
    # every detection kept (score threshold 0) so that the refinement runs at evaluation
    opts = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "8",
            "MODEL.TRANSFINER.TEST_MAX_INSTANCES", "2"]  # fmt: skip
    out = tmp_path / "run"
    results = train_and_evaluate(os.path.join(repo_root, SHAPES_CFG), str(out), opts)
    assert set(results) == {"bbox", "segm", "boundary"} and "AP75" in results["segm"]
    import json

    with open(out / "metrics.json") as f:
        rec = [json.loads(line) for line in f if "loss_refine" in line]
    keys = {"loss_mask", "loss_incoherent", "loss_refine", "loss_semantic", "loss_boundary"}
    assert rec and keys <= set(rec[-1]) and all(math.isfinite(rec[-1][k]) for k in keys)
    with open(out / "inference/shapes_tiny_val/coco_instances_results.json") as f:
        preds = json.load(f)
    assert preds and all("segmentation" in p for p in preds)

    # the node counts of the trained model: every level-0 cell of a refined instance is a node
    argv = ["--config-file", os.path.join(repo_root, SHAPES_CFG), "--weights"]
    rows = nodes.main(argv + [str(out / "model_final.pth"), "--num-images", "1"] + TINY_OPTS + opts)
    seconds, detections, refined, per_instance = rows[0]
    assert seconds > 0 and 0 < refined <= 2 and refined <= detections <= 8
    assert len(per_instance) == 2  # the shapes config: levels 28 and 56
    assert per_instance[0] == 28 * 28 and 0 <= per_instance[1] <= 56 * 56

    # the timing of the whole evaluation: every image, the evaluation's AP, the nodes
    weights = ["--weights", str(out / "model_final.pth"), "--num-images", "0"]
    res = timing.main(argv[:2] + weights + TINY_OPTS + opts)
    assert res["images"] == len(DatasetCatalog.get("shapes_tiny_val"))
    for task in ("segm", "bbox", "boundary"):
        assert res[task]["AP75"] == pytest.approx(results[task]["AP75"], nan_ok=True)
    assert res["total_cpu_s"] > 0 and 0 < res["refined_per_image"] <= 2
    assert res["nodes_per_refined_instance"][0] == 28 * 28
    # the refinement measured on the GT boxes: refined and coarse masks of every object
    from instseg_d2.data import annotated_test_batches
    from instseg_d2.engine import build_config, load_model

    cfg = build_config(argv[1], TINY_OPTS + opts)
    model = load_model(cfg, str(out / "model_final.pth"))
    batches = annotated_test_batches(cfg, "shapes_tiny_val", 2)
    on_gt = nodes.refinement_vs_coarse(model, batches)
    assert on_gt["objects"] == sum(len(b[0]["instances"]) for b in batches) > 0
    assert all(0 <= on_gt[k][0] <= 1 and 0 <= on_gt[k][1] <= 1 for k in ("refined", "coarse"))
    assert on_gt["refined"] != on_gt["coarse"] and model.roi_heads.test_max_instances == 2
    # without refinement: the same detections, the coarse masks
    coarse = timing.main(argv[:2] + weights + TINY_OPTS + opts + [
        "MODEL.TRANSFINER.TEST_MAX_INSTANCES", "0"])  # fmt: skip
    assert coarse["refined_per_image"] == 0
    assert coarse["bbox"]["AP"] == pytest.approx(res["bbox"]["AP"], nan_ok=True)


def test_gt_incoherent_share_by_object_size():
    """The incoherent share of the 28x28 ground truth: a band along the edges, so nearly all
    of a small object's grid and a thin ring of a large one's."""
    m = torch.zeros(2, 128, 128, dtype=torch.bool)
    m[0, 10:18, 10:18] = True  # 8 px
    m[1, 40:104, 40:104] = True  # 64 px
    shares, sides = nodes.gt_incoherent_share(
        [Instances((128, 128), gt_masks=BitMasks(m))], 28, 2, 0.01, 0.05
    )
    assert sides.tolist() == [8.0, 64.0]
    assert shares[0] > 0.8 and 0.1 < shares[1] < 0.2


def test_box_iou_and_absolute_error_hand_values():
    probs = torch.tensor([[[0.9, 0.2], [0.6, 0.4]]])
    gt = torch.tensor([[[True, False], [False, True]]])
    iou, err = nodes._box_iou_l1(probs, gt)  # predicted (0,0), (1,0); GT (0,0), (1,1)
    assert iou.item() == pytest.approx(1 / 3) and err.item() == pytest.approx(1.5 / 4)


def test_resolution_ceiling_of_a_square_and_a_disk():
    """A box-filling square survives any grid exactly; a large disk loses its outline on a
    coarse grid and less on a finer one."""
    from transfiner_d2.resolution import resolution_ceiling, roundtrip_ious

    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    masks = torch.zeros(2, 256, 256, dtype=torch.bool)
    masks[0, 20:60, 30:90] = True  # 60 x 40 px
    masks[1] = (yy - 128.5) ** 2 + (xx - 128.5) ** 2 < 100**2  # 200 px across
    iou28, biou28, sides = roundtrip_ious(masks, 28)
    iou112, biou112, _ = roundtrip_ious(masks, 112)
    assert sides.tolist() == [60.0, 200.0]
    assert iou28[0] == 1.0 and biou28[0] == 1.0 and iou112[0] == 1.0
    assert 0.98 < iou28[1] < iou112[1] <= 1.0 and biou28[1] < biou112[1] <= 1.0
    out = resolution_ceiling([masks], [28])[28]
    assert out["all"][0] == 2 and out["48-inf"][0] == 2 and out["0-24"] == (0,)
    assert out["all"][1] == pytest.approx((1.0 + iou28[1].item()) / 2)


def test_means_by_box_side_hand_values():
    from transfiner_d2.nodes import means_by_box_side

    sides = torch.tensor([10.0, 60.0, 70.0])
    out = means_by_box_side(sides, torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0.0, 1.0, 0.0]))
    assert out["all"][:2] == (3, 3.0) and out["all"][2] == pytest.approx(1.0 / 3)
    assert out["0-24"] == (1, 1.0, 0.0)
    assert out["24-48"] == (0,)
    assert out["48-inf"] == (2, 4.0, 0.5)
