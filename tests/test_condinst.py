"""CondInst: the 169 dynamic parameters, grouped head == per-instance loop, targets, losses."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Boxes, ImageList, Instances

from condinst_d2 import DynamicMaskHead, dynamic_param_counts, semantic_targets
from instseg_d2.layers import aligned_bilinear
from instseg_d2.testing import build_tiny_cfg, train_and_evaluate

SHAPES_CFG = "configs/CondInst/shapes_CondInst_R_18.yaml"


def test_dynamic_parameter_count_is_169():
    w, b = dynamic_param_counts(8, 8, 3)
    assert w == [(8 + 2) * 8, 8 * 8, 8 * 1] and b == [8, 8, 1]
    assert sum(w) + sum(b) == 169
    assert DynamicMaskHead(in_channels=8, channels=8, num_layers=3).num_gen_params == 169
    assert sum(dynamic_param_counts(8, 8, 3, use_rel_coords=False)[0]) == 8 * 8 + 64 + 8
    with pytest.raises(ValueError, match="NUM_LAYERS"):
        dynamic_param_counts(8, 8, 0)


def _per_instance_loop(head, feats, stride, im_inds, params, locs, levels):
    """The mask FCN of each instance run on its own, written from the paper's definition."""
    n, c, h, w = feats.shape
    soi = [64.0, 128.0, 256.0, 512.0, 1024.0]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    px, py = xs * stride + stride // 2, ys * stride + stride // 2
    out = []
    for i in range(len(params)):
        rel_x = (locs[i, 0] - px) / soi[levels[i]]
        rel_y = (locs[i, 1] - py) / soi[levels[i]]
        x = torch.cat([rel_x[None], rel_y[None], feats[im_inds[i]]])  # (10, H, W)
        p = params[i]
        w0, p = p[:80].view(8, 10), p[80:]
        w1, p = p[:64].view(8, 8), p[64:]
        w2, p = p[:8].view(1, 8), p[8:]
        b0, b1, b2 = p[:8], p[8:16], p[16:17]
        x = F.relu(torch.einsum("oc,chw->ohw", w0, x) + b0[:, None, None])
        x = F.relu(torch.einsum("oc,chw->ohw", w1, x) + b1[:, None, None])
        x = torch.einsum("oc,chw->ohw", w2, x) + b2[:, None, None]
        out.append(x)
    return torch.stack(out)  # (R, 1, H, W)


def test_grouped_dynamic_head_equals_per_instance_loop():
    torch.manual_seed(0)
    head = DynamicMaskHead(in_channels=8, channels=8, num_layers=3, mask_out_stride=8)
    feats = torch.randn(2, 8, 5, 6)
    im_inds = torch.tensor([0, 1, 1, 0])
    params = torch.randn(4, 169)
    locs = torch.tensor([[4.0, 4.0], [20.0, 36.0], [44.0, 12.0], [100.0, 8.0]])
    levels = torch.tensor([0, 1, 2, 4])
    grouped = head(feats, 8, im_inds, params, locs, levels)
    loop = _per_instance_loop(head, feats, 8, im_inds, params, locs, levels)
    assert grouped.shape == (4, 1, 5, 6)
    assert torch.allclose(grouped, loop, atol=1e-5)
    # with the stride-4 output, the logits are the aligned-bilinear upsampling of the same
    head.mask_out_stride = 4
    assert torch.allclose(
        head(feats, 8, im_inds, params, locs, levels), aligned_bilinear(loop, 2), atol=1e-5
    )
    with pytest.raises(ValueError, match="169"):
        head(feats, 8, im_inds, params[:, :100], locs, levels)


def test_semantic_targets_smallest_mask_wins():
    m = torch.zeros(2, 8, 8)
    m[0, :, :] = 1  # large, class 0
    m[1, 4:, 4:] = 1  # small, class 2, on top of it
    t = semantic_targets(m, torch.tensor([0, 2]), stride=4)  # samples rows/cols 2 and 6
    assert t.tolist() == [[1, 1], [1, 3]]
    assert semantic_targets(torch.zeros(0, 8, 8), torch.zeros(0, dtype=torch.long), 4).sum() == 0


@pytest.fixture(scope="module")
def condinst_model(tiny_shapes, repo_root, tmp_path_factory):
    from instseg_d2.engine import Trainer

    cfg = build_tiny_cfg(f"{repo_root}/{SHAPES_CFG}", str(tmp_path_factory.mktemp("ci")))
    return Trainer.build_model(cfg)


def test_gt_masks_sampled_at_stride_4_and_dice_loss_hand_computed(condinst_model):
    model = condinst_model
    images = ImageList(torch.zeros(1, 3, 64, 64), [(60, 61)])
    gt = Instances((60, 61))
    gt.gt_boxes = Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    gt.gt_classes = torch.tensor([1])
    m = torch.zeros(1, 60, 61, dtype=torch.bool)
    m[0, :8, :8] = True  # pixels 2 and 6 of rows/cols 0..7 are sampled: 2 x 2 ones
    gt.gt_masks = BitMasks(m)
    model.prepare_targets(images, [gt])
    assert gt.gt_bitmasks_full.shape == (1, 64, 64)  # padded to the input
    assert gt.gt_bitmasks.shape == (1, 16, 16)  # [2::4, 2::4]
    assert gt.gt_bitmasks[0, :2, :2].eq(1).all() and gt.gt_bitmasks.sum() == 4

    # One positive whose filters are all zero: logits 0 everywhere, p = 0.5 on the 16 x 16 grid.
    model.train()
    features = model.backbone(torch.zeros(2, 3, 64, 64))
    features = {k: v[:1] for k, v in features.items()}
    pos = Instances((0, 0))
    pos.gt_inds = torch.tensor([0])
    pos.im_inds = torch.tensor([0])
    pos.top_feats = torch.zeros(1, 169)
    pos.locations = torch.tensor([[4.0, 4.0]])
    pos.fpn_levels = torch.tensor([0])
    losses = model.mask_losses(images, features, {"instances": pos}, [gt])
    # dice = 2 * 0.5 * 4 / (0.25 * 256 + 4 + 1e-5)
    assert losses["loss_mask"].item() == pytest.approx(1 - 4.0 / (64 + 4 + 1e-5), rel=1e-5)
    empty = model.mask_losses(images, features, {"instances": pos[[]]}, [gt])
    assert empty["loss_mask"].item() == 0 and empty["loss_mask"].requires_grad


def test_max_proposals_subsampling(condinst_model):
    pos = Instances((0, 0))
    pos.gt_inds = torch.arange(10)
    model = condinst_model
    model.max_proposals = 3
    kept = model.select_proposals(pos)
    assert len(kept) == 3 and len(set(kept.gt_inds.tolist())) == 3
    model.max_proposals = 500
    assert len(model.select_proposals(pos)) == 10


def test_inference_masks_at_image_size(condinst_model):
    model = condinst_model
    model.eval()
    model.proposal_generator.score_thresh_test = 0.0  # keep some detections of the random model
    try:
        x = {
            "image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8),
            "height": 48,
            "width": 64,
        }
        (out,) = model([x])
        (raw,) = model.inference([x], do_postprocess=False)
    finally:
        model.proposal_generator.score_thresh_test = 0.05
    inst = out["instances"]
    assert len(inst) > 0 and inst.pred_masks.shape[1:] == (48, 64)
    assert inst.pred_masks.dtype == torch.bool
    assert raw.pred_global_masks.shape[1:] == (1, 96 // 4, 128 // 4)  # stride 4, padded input


def test_postprocess_mask_geometry(condinst_model):
    # A stride-4 mask that is 1 on cells 1..2 (pixels 4..11 of a 16 x 16 input), upsampled to
    # the input and then to a 32 x 32 original image: a square in [8, 24) up to the border.
    det = Instances((16, 16))
    det.pred_boxes = Boxes(torch.tensor([[4.0, 4.0, 12.0, 12.0]]))
    det.scores = torch.tensor([0.9])
    det.pred_classes = torch.tensor([0])
    g = torch.zeros(1, 1, 4, 4)
    g[0, 0, 1:3, 1:3] = 1.0
    det.pred_global_masks = g
    out = condinst_model.postprocess(
        det, {"height": 32, "width": 32}, ImageList(torch.zeros(1, 3, 16, 16), [(16, 16)])
    )
    assert out.pred_boxes.tensor.tolist() == [[8.0, 8.0, 24.0, 24.0]]
    rows = out.pred_masks[0].any(dim=1).nonzero().squeeze(1)
    assert rows.min().item() in (7, 8, 9) and rows.max().item() in (22, 23, 24)


def test_condinst_end_to_end_tiny(tiny_shapes, tmp_path, repo_root):
    res = train_and_evaluate(
        f"{repo_root}/{SHAPES_CFG}", str(tmp_path),
        ["MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON", "True"],
    )  # fmt: skip
    assert set(res) == {"bbox", "segm", "boundary"}
    import json

    with open(tmp_path / "metrics.json") as f:
        rec = [json.loads(l) for l in f if "loss_mask" in l]
    assert {"loss_mask", "loss_sem", "loss_fcos_cls"} <= set(rec[-1])


def test_bad_config_values_are_named(tiny_shapes, repo_root, tmp_path):
    from instseg_d2.engine import Trainer

    for opts, match in [
        (["MODEL.CONDINST.TOPK_PROPOSALS_PER_IM", "64"], "MAX_PROPOSALS and TOPK_PROPOSALS_PER_IM"),
        (["MODEL.CONDINST.MASK_BRANCH.IN_FEATURES", "['p2', 'p3']"], "MASK_BRANCH.IN_FEATURES"),
        (["MODEL.CONDINST.MASK_HEAD.NUM_LAYERS", "0"], "NUM_LAYERS"),
    ]:
        cfg = build_tiny_cfg(f"{repo_root}/{SHAPES_CFG}", str(tmp_path), opts)
        with pytest.raises(ValueError, match=match):
            Trainer.build_model(cfg)
