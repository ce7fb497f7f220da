"""Semi-convolutional Mask R-CNN: losses and kernel on hand-computed values, the 0.1 gradient
into the FPN, the RoI coordinates, the mask head's fusion, config errors, end to end."""

import math
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from instseg_d2.engine import build_config
from instseg_d2.layers import scale_gradient
from instseg_d2.testing import train_and_evaluate
from semiconv_d2 import (
    SemiConvEmbeddingHead,
    SemiConvMaskHead,
    embedding_loss,
    fuse_scores,
    hard_seed,
    instance_embedding_loss,
    kernel_bce_loss,
    log_steered_bilateral_kernel,
    pixel_coordinates,
    soft_seed,
)
from semiconv_d2.clustering import adjusted_rand_index, kmeans
from semiconv_d2.losses import masks_at_level

SHAPES = "configs/SemiConv/shapes_SemiConv_R_18.yaml"
COCO = "configs/SemiConv/SemiConv_R_50_1x.yaml"
MASK_RCNN_SHAPES = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"
MASK_RCNN_COCO = "configs/MaskRCNN/MaskRCNN_R_50_1x.yaml"
# the parameters semi-conv adds to Mask R-CNN
NEW_KEYS = {
    "roi_heads.mask_head.log_sigma",
    "roi_heads.embedding_head.hidden.weight",
    "roi_heads.embedding_head.hidden.bias",
    "roi_heads.embedding_head.predictor.weight",
    "roi_heads.embedding_head.predictor.bias",
}


# ---------------------------------------------------------------------------------------
# embedding loss (eq. 5)
# ---------------------------------------------------------------------------------------
def test_instance_embedding_loss_hand_computed():
    # three pixels in a row with 2-d embeddings (0, 0), (3, 4), (6, 8)
    psi = torch.tensor([[[0.0, 3.0, 6.0]], [[0.0, 4.0, 8.0]]])  # (D=2, H=1, W=3)
    masks = torch.tensor([[[1, 1, 0]], [[0, 0, 1]], [[1, 1, 1]]], dtype=torch.bool)
    loss = instance_embedding_loss(psi, masks)
    # A = {p0, p1}: mean (1.5, 2), both at distance 2.5 (not squared: 6.25 would be the
    # variance); B = {p2}: 0; C = all: mean (3, 4), distances 5, 0, 5 -> 10 / 3
    assert loss.tolist() == pytest.approx([2.5, 0.0, 10 / 3], abs=1e-5)
    # a single-pixel instance has a finite (zero) gradient despite the norm at 0
    psi.requires_grad_(True)
    instance_embedding_loss(psi, masks[1:2]).sum().backward()
    assert torch.isfinite(psi.grad).all() and psi.grad.abs().sum() == 0


def _target(masks: torch.Tensor) -> Instances:
    t = Instances(tuple(masks.shape[1:]))
    t.gt_masks = BitMasks(masks)
    t.gt_boxes = BitMasks(masks).get_bounding_boxes()
    t.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
    return t


def test_masks_at_level_samples_cell_centres_and_polygons():
    m = torch.zeros(1, 6, 6, dtype=torch.bool)
    m[0, 0:2, 0:4] = True  # rows 0-1, columns 0-3
    # stride 2: cell (i, j) <- pixel (2i+1, 2j+1); level padded to 4 x 4
    lvl = masks_at_level(BitMasks(m), (6, 6), 2, (4, 4))
    expect = torch.zeros(4, 4, dtype=torch.bool)
    expect[0, 0:2] = True
    assert torch.equal(lvl[0], expect)
    poly = PolygonMasks([[np.array([0, 0, 4, 0, 4, 2, 0, 2], dtype=np.float64)]])
    assert torch.equal(masks_at_level(poly, (6, 6), 2, (4, 4))[0], expect)


def test_embedding_loss_levels_and_mean():
    # one image 4 x 4, two levels: stride 1 (4 x 4) and stride 2 (2 x 2)
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0, :, :2] = True  # left half
    m[1, 0, 3] = True  # one pixel, not on a stride-2 cell centre
    e1 = torch.zeros(1, 2, 4, 4)
    e1[0, 0, :, 0] = 2.0  # left half: x-embeddings 2, 0 -> mean 1, distances 1
    e2 = torch.zeros(1, 2, 2, 2)
    e2[0, 1, 0, 0], e2[0, 1, 1, 0] = 4.0, 0.0  # left column of stride 2: 4, 0 -> 2
    t = [_target(m)]
    # all levels: (inst0, l0) = 1, (inst1, l0) = 0, (inst0, l1) = 2; inst1 has no l1 cell
    assert embedding_loss([e1, e2], [1, 2], t).item() == pytest.approx(3 / 3, abs=1e-5)
    # one level per instance: inst0 on level 1 (2), inst1 on level 0 (0)
    levels = [torch.tensor([1, 0])]
    assert embedding_loss([e1, e2], [1, 2], t, levels).item() == pytest.approx(1.0, abs=1e-5)
    # no instance: zero with a graph
    e1.requires_grad_(True)
    empty = embedding_loss([e1], [1], [_target(torch.zeros(0, 4, 4, dtype=torch.bool))])
    empty.backward()
    assert empty.item() == 0 and e1.grad is not None


# ---------------------------------------------------------------------------------------
# steered bilateral kernel (eq. 9), seeds, fusion, kernel BCE
# ---------------------------------------------------------------------------------------
def _roi_psi():
    # one RoI, D = 2, 2 x 2 bins with embeddings (0, 0), (3, 4) / (0, 1), (1, 0)
    return torch.tensor([[[[0.0, 3.0], [0.0, 1.0]], [[0.0, 4.0], [1.0, 0.0]]]])


def test_kernel_seeds_and_fusion_hand_computed():
    psi = _roi_psi()
    log_k = log_steered_bilateral_kernel(psi, torch.zeros(1, 2), torch.tensor(2.0))
    # -||Psi_u - Psi_s|| / sigma = -[0, 5, 1, 1] / 2 (Laplacian: distance, not squared)
    assert log_k[0].flatten().tolist() == pytest.approx([0.0, -2.5, -0.5, -0.5], abs=1e-5)
    scores = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    # softmax(s) = [1, 3, 1, 1] / 6 -> E[Psi] = ((0,0) + 3 (3,4) + (0,1) + (1,0)) / 6
    assert soft_seed(psi, scores)[0].tolist() == pytest.approx([10 / 6, 13 / 6])
    assert hard_seed(psi, scores)[0].tolist() == [3.0, 4.0]  # argmax of s
    fused = fuse_scores(scores, log_k)
    assert fused[0].flatten().tolist() == pytest.approx(
        [0.0, math.log(3.0) - 2.5, -0.5, -0.5], abs=1e-5
    )
    assert hard_seed(psi[:0], scores[:0]).shape == (0, 2)


def test_kernel_bce_hand_computed():
    log_k = torch.tensor([[[0.0, -2.5], [-0.5, -0.5]]])
    y = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    # -log K on the mask, -log(1 - K) off it; K = 1 at the seed costs nothing on the mask
    expect = (0.0 - math.log(1 - math.exp(-2.5)) + 0.5 - math.log(1 - math.exp(-0.5))) / 4
    assert kernel_bce_loss(log_k, y).item() == pytest.approx(expect, rel=1e-5)
    # K = 1 off the mask is clamped (finite), not inf
    assert math.isfinite(kernel_bce_loss(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)).item())
    assert kernel_bce_loss(torch.zeros(0, 2, 2), torch.zeros(0, 2, 2)).item() == 0


def _head(**kw):
    from detectron2.layers import ShapeSpec

    return SemiConvMaskHead(
        ShapeSpec(channels=4, height=2, width=2), num_classes=3, conv_dims=[4, 4], **kw
    )


def test_mask_head_inference_is_sigmoid_of_s_plus_log_k():
    head = _head(sigma_init=2.0).eval()
    torch.nn.init.zeros_(head.predictor.weight)
    with torch.no_grad():  # constant score s = 0.7 for class 1: seed = first bin (0, 0)
        head.predictor.bias.copy_(torch.tensor([5.0, 0.7, -5.0]))
    inst = Instances((10, 10), pred_classes=torch.tensor([1]), pred_boxes=Boxes(torch.zeros(1, 4)))
    out = head(torch.randn(1, 4, 1, 1), [inst], _roi_psi())[0]
    expect = torch.sigmoid(torch.tensor([0.7, 0.7 - 2.5, 0.7 - 0.5, 0.7 - 0.5])).view(1, 1, 2, 2)
    assert torch.allclose(out.pred_masks, expect, atol=1e-5)
    with pytest.raises(ValueError, match="mask resolution"):
        head(torch.randn(1, 4, 1, 1), [inst], torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="SIGMA_INIT"):
        _head(sigma_init=0.0)


def test_mask_head_training_losses_and_learnable_sigma():
    head = _head(sigma_init=1.0).train()
    inst = Instances((8, 8))
    inst.proposal_boxes = Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    inst.gt_classes = torch.tensor([2])
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, :, :4] = True
    inst.gt_masks = BitMasks(m)
    psi = _roi_psi().requires_grad_(True)
    with EventStorage():
        losses = head(torch.randn(1, 4, 1, 1), [inst], psi)
    assert set(losses) == {"loss_mask", "loss_kernel"}
    sum(losses.values()).backward()
    assert head.log_sigma.grad is not None and head.log_sigma.grad != 0
    assert psi.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------
# embedding subnet: coordinates, gradient scaling
# ---------------------------------------------------------------------------------------
def test_pixel_coordinates_and_roi_crop_give_image_positions():
    u = pixel_coordinates(2, 3, 4, unit=2.0)
    assert u[0].tolist() == [[1.0, 3.0, 5.0], [1.0, 3.0, 5.0]]  # (j + 0.5) * 4 / 2
    assert u[1, :, 0].tolist() == [1.0, 3.0]
    # RoIAlign (aligned) of u on any level gives the image position of each bin's centre:
    # u inside a RoI is in image coordinates, whatever level the RoI is cropped from
    maps = [pixel_coordinates(16, 16, s, 1.0)[None] for s in (4, 8)]
    pooler = ROIPooler(4, (1 / 4, 1 / 8), 0, "ROIAlignV2", canonical_box_size=16)
    box = torch.tensor([[10.0, 20.0, 42.0, 36.0]])  # 32 x 16: level 4 (stride 8)... clamped
    for small in (False, True):
        b = box if not small else torch.tensor([[10.0, 20.0, 18.0, 24.0]])  # stride 4
        got = pooler(maps, [Boxes(b)])[0]
        x0, y0, x1, y1 = b[0].tolist()
        cx = x0 + (torch.arange(4) + 0.5) * (x1 - x0) / 4
        cy = y0 + (torch.arange(4) + 0.5) * (y1 - y0) / 4
        assert torch.allclose(got[0], cx.expand(4, 4), atol=1e-4)
        assert torch.allclose(got[1], cy[:, None].expand(4, 4), atol=1e-4)


def test_embedding_head_semi_conv_adds_u_to_two_dims():
    head = SemiConvEmbeddingHead(in_channels=4, strides=[4], hidden_dim=6, coord_unit=4.0)
    conv = SemiConvEmbeddingHead(
        in_channels=4, strides=[4], hidden_dim=6, coord_unit=4.0, semi_conv=False
    )
    conv.load_state_dict(head.state_dict())
    x = torch.randn(1, 4, 3, 5)
    diff = head([x])[0] - conv([x])[0]
    assert torch.allclose(diff[0, :2], pixel_coordinates(3, 5, 4, 4.0), atol=1e-6)
    assert diff[0, 2:].abs().max() == 0
    with pytest.raises(ValueError, match="EMBED_DIM"):
        SemiConvEmbeddingHead(in_channels=4, strides=[4], embed_dim=1)
    with pytest.raises(ValueError, match="GRAD_SCALE"):
        SemiConvEmbeddingHead(in_channels=4, strides=[4], grad_scale=-1)


def test_scale_gradient():
    x = torch.ones(3, requires_grad=True)
    y = scale_gradient(x, 0.1)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.1, 0.2, 0.3]))
    assert not scale_gradient(x, 0.0).requires_grad
    with pytest.raises(ValueError):
        scale_gradient(x, -0.5)


def _batch(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        inst = Instances((size, size))
        m = torch.zeros(2, size, size, dtype=torch.bool)
        m[0, 8:30, 10:40] = True
        m[1, 35 - i : 60, 30:50] = True
        inst.gt_masks = BitMasks(m)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        inst.gt_classes = torch.tensor([0, 1 + i])
        img = torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8)
        out.append({"image": img, "instances": inst, "height": size, "width": size})
    return out


TINY = ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "('shapes_tiny_train',)"]
TINY += ["DATASETS.TEST", "('shapes_tiny_val',)"]


def _shapes_model(repo_root, opts=(), config=SHAPES):
    return build_model(build_config(os.path.join(repo_root, config), TINY + list(opts)))


@pytest.fixture(scope="module")
def shapes_model(tiny_shapes, repo_root):
    torch.manual_seed(0)
    return _shapes_model(repo_root)


def test_fpn_gradient_through_embedding_subnet_is_one_tenth(shapes_model):
    """loss_embed reaches the FPN only through the subnet: its gradient there is 0.1x."""
    model, grads = shapes_model.train(), {}
    assert model.roi_heads.embedding_head.grad_scale == 0.1  # MODEL.SEMICONV.GRAD_SCALE
    batch = _batch()
    for scale in (0.1, 1.0):
        model.roi_heads.embedding_head.grad_scale = scale
        with EventStorage():
            losses = model(batch)
        model.zero_grad()
        losses["loss_embed"].backward()
        grads[scale] = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }
    model.roi_heads.embedding_head.grad_scale = 0.1
    fpn = [n for n in grads[1.0] if n.startswith("backbone.fpn_")]
    # on shapes every GT box is assigned to p2 ("assigned" levels): p2's output conv and, via
    # the top-down path, every lateral conv get a gradient
    nonzero = [n for n in fpn if grads[1.0][n].abs().sum() > 0]
    assert {"backbone.fpn_output2.weight", "backbone.fpn_lateral5.weight"} <= set(nonzero)
    for n in fpn:
        assert torch.allclose(grads[0.1][n], 0.1 * grads[1.0][n], rtol=1e-3, atol=1e-9), n
    # the subnet's own parameters get their full gradient
    sub = [n for n in grads[1.0] if "embedding_head" in n]
    assert len(sub) == 4
    for n in sub:
        assert torch.allclose(grads[0.1][n], grads[1.0][n], rtol=1e-4, atol=1e-9), n


def test_roi_heads_outputs_and_mask_rcnn_weights_load(shapes_model, repo_root):
    model = shapes_model
    with EventStorage():
        losses = model.train()(_batch())
    assert {"loss_embed", "loss_kernel", "loss_mask", "loss_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    with torch.no_grad():
        out = model(_batch(1))[0]["instances"]
    assert len(out) > 0 and out.pred_masks.shape[1:] == (64, 64)
    # no detection at all: empty masks, no error
    model.roi_heads.box_predictor.test_score_thresh = 1.1
    with torch.no_grad():
        assert len(model(_batch(1))[0]["instances"]) == 0
    model.roi_heads.box_predictor.test_score_thresh = 0.05
    # forward_with_given_boxes (used by test-time augmentation) computes Psi itself
    with torch.no_grad():
        images = model.preprocess_image(_batch(1))
        given = Instances(images.image_sizes[0])
        given.pred_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 30.0]]))
        given.pred_classes = torch.tensor([1])
        given = model.roi_heads.forward_with_given_boxes(model.backbone(images.tensor), [given])
    assert given[0].pred_masks.shape == (1, 1, 28, 28)
    # the paper fine-tunes a trained Mask R-CNN: its weights load, only the new parts missing
    mask_rcnn = _shapes_model(repo_root, config=MASK_RCNN_SHAPES)
    ours, theirs = model.state_dict(), mask_rcnn.state_dict()
    assert set(theirs) <= set(ours)  # nothing unexpected
    assert all(ours[k].shape == v.shape for k, v in theirs.items())
    assert set(ours) - set(theirs) == NEW_KEYS


def test_coco_config_loads_detectron2_mask_rcnn_checkpoint(tmp_path, repo_root):
    """The COCO config fine-tunes detectron2's Mask R-CNN R-50-FPN (its MODEL.WEIGHTS): a
    checkpoint in the model-zoo format (.pkl, numpy arrays, the model's parameter names and
    shapes) loads with no unexpected key, no shape mismatch and only the new parts missing."""
    import pickle

    from instseg_d2.engine import InstSegCheckpointer

    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""]
    torch.manual_seed(0)
    mask_rcnn = build_model(build_config(os.path.join(repo_root, MASK_RCNN_COCO), opts))
    zoo = {k: v.numpy() for k, v in mask_rcnn.state_dict().items()}
    del mask_rcnn
    path = str(tmp_path / "model_final_mask_rcnn.pkl")
    with open(path, "wb") as f:
        pickle.dump({"model": zoo, "__author__": "Detectron2 Model Zoo"}, f)
    model = build_model(build_config(os.path.join(repo_root, COCO), opts))
    InstSegCheckpointer(model).load(path)
    ours = model.state_dict()
    assert set(zoo) <= set(ours) and set(ours) - set(zoo) == NEW_KEYS  # nothing unexpected
    for k, v in zoo.items():  # every Mask R-CNN tensor loaded, same shape
        assert np.array_equal(ours[k].numpy(), v), k
    assert model.roi_heads.mask_head.log_sigma.item() == 0.0  # the new parts keep their init


def test_config_errors(tiny_shapes, repo_root):
    with pytest.raises(ValueError, match="SemiConvMaskHead"):
        _shapes_model(repo_root, ["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead"])
    with pytest.raises(ValueError, match="EMBED_LOSS_LEVELS"):
        _shapes_model(repo_root, ["MODEL.SEMICONV.EMBED_LOSS_LEVELS", "some"])
    with pytest.raises(ValueError, match="COORD_UNIT"):
        _shapes_model(repo_root, ["MODEL.SEMICONV.COORD_UNIT", "0"])
    cfg = build_config(os.path.join(repo_root, COCO), ["MODEL.DEVICE", "cpu"])
    assert cfg.MODEL.SEMICONV.HIDDEN_DIM == 256 and cfg.MODEL.SEMICONV.EMBED_DIM == 8


# ---------------------------------------------------------------------------------------
# clustering helpers of the synthetic experiment
# ---------------------------------------------------------------------------------------
def test_adjusted_rand_index_hand_computed():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    # contingency [[2, 0], [0, 1], [0, 1]]: index 1, sums 2 and 1, expected 2/6, max 1.5
    assert adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7)
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert adjusted_rand_index([0, 0, 0, 0], [0, 1, 2, 3]) == pytest.approx(0.0)


def test_kmeans_separates_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [4, 0], [0, 4], [4, 4]])
    x = np.concatenate([rng.normal(c, 0.2, (15, 2)) for c in centres])
    truth = np.repeat(np.arange(4), 15)
    assert adjusted_rand_index(truth, kmeans(x, 4)) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        kmeans(x, 0)


# ---------------------------------------------------------------------------------------
# end to end through the Trainer on the tiny shapes splits
# ---------------------------------------------------------------------------------------
def test_end_to_end_train_and_evaluate(tiny_shapes, tmp_path, repo_root):
    out = str(tmp_path / "run")
    # a low score threshold so that the 3-iteration model predicts and the mask path is run
    res = train_and_evaluate(
        os.path.join(repo_root, SHAPES), out, ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    )
    assert set(res) == {"bbox", "segm", "boundary"} and math.isfinite(res["segm"]["AP"])
    from instseg_d2.testing import loss_history

    assert loss_history(out, "loss_embed") and loss_history(out, "loss_kernel")


# ---------------------------------------------------------------------------------------
# the synthetic-dots experiment (sec. 4.1), at toy size
# ---------------------------------------------------------------------------------------
def test_dots_are_identical_and_on_a_grid():
    from semiconv_d2.synthetic import DotsSpec, make_dots

    spec = DotsSpec(size=40, grid=3, spacing=12, radius=3.0)
    images, inst = make_dots(spec, 2, seed=0)
    assert images.shape == (2, 3, 40, 40) and inst.max() == 9
    assert torch.equal(images[:, 0] > 0, inst > 0)
    areas = torch.bincount(inst[0].flatten())[1:]
    assert (areas == areas[0]).all()  # identical dots
    assert not torch.equal(inst[0], inst[1])  # the grid moves between images
    with pytest.raises(ValueError, match="does not fit"):
        make_dots(DotsSpec(size=20, grid=3, spacing=12), 1, seed=0)


def test_synthetic_semi_conv_separates_identical_dots_conv_does_not():
    from semiconv_d2.synthetic import DotsSpec, run_experiment

    spec = DotsSpec(size=40, grid=3, spacing=12, radius=3.0)
    res, maps = run_experiment(spec, iters=15, num_train=8, num_test=2)
    assert res["semiconv"]["loss_last10"] < res["semiconv"]["loss_first"]
    assert res["semiconv"]["ari_min"] > 0.9
    assert res["conv"]["ari_mean"] < 0.3
    assert maps["conv"][0].shape == (40, 40) and maps["conv"][0].max() == 8


def test_synthetic_command_line_writes_results_and_clusters(tmp_path, capsys):
    import json

    from semiconv_d2.synthetic import main

    argv = ["--size", "40", "--grid", "3", "--spacing", "12", "--radius", "3", "--iters", "2"]
    res = main(argv + ["--num-train", "4", "--num-test", "2", "--threads", "1",
                       "--output-dir", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 4 and table[3].startswith("| semi-conv Psi_u |")  # header, rule, 2 rows
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == res and set(res) == {"conv", "semiconv"}
    assert (tmp_path / "clusters.png").stat().st_size > 0
