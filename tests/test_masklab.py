"""MaskLab: direction bins, direction pooling, crops, targets and losses on hand-built inputs,
the backbone against detectron2's FPN, config errors, and train + eval on the tiny shapes."""

import math
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from masklab_d2 import (
    MaskLabDenseHead,
    MaskLabMaskHead,
    add_masklab_config,
    crop_direction_bins,
    direction_bin,
    direction_pooling,
)
from masklab_d2.crops import crop_and_resize, crop_class_channel
from masklab_d2.losses import dense_ce_loss, mask_bce_loss
from masklab_d2.targets import dense_targets, mask_crop_targets, masks_on_grid

SHAPES_CFG = "configs/MaskLab/shapes_MaskLab_R_18.yaml"


def _bin_by_definition(dx, dy, half_w, half_h, num_dirs=8, num_bins=4, max_dist=1.0):
    """The (angle sector, distance ring) channel, written out with scalar math."""
    angle = math.atan2(dy, dx) % (2 * math.pi)
    sector = min(int(angle // (2 * math.pi / num_dirs)), num_dirs - 1)
    r = math.hypot(dx / half_w, dy / half_h)
    ring = min(int(r // (max_dist / num_bins)), num_bins - 1)
    return sector * num_bins + ring


def _bin(dx, dy, hw, hh, *args):
    t = lambda v: torch.tensor(float(v))  # noqa: E731
    return int(direction_bin(t(dx), t(dy), t(hw), t(hh), *args))


def test_direction_bin_of_known_points():
    # box of half size (2, 1); angle from +x towards +y (image y points down); ring width 0.25
    assert _bin(0, 0, 2, 1) == 0  # the centre: sector 0, ring 0
    assert _bin(1, 0.1, 2, 1) == 0 * 4 + 2  # 5.7 deg, r = 0.51
    assert _bin(0.3, 0.31, 2, 1) == 1 * 4 + 1  # 45.9 deg, r = 0.34
    assert _bin(-0.1, 0.5, 2, 1) == 2 * 4 + 2  # 101 deg (below the centre, on screen)
    assert _bin(-1, -0.05, 2, 1) == 4 * 4 + 2  # 182.9 deg
    assert _bin(-0.2, -0.9, 2, 1) == 5 * 4 + 3  # 257.5 deg -> sector 5, r = 0.91
    assert _bin(1.9, -0.9, 2, 1) == 7 * 4 + 3  # 334.7 deg, r = 1.31 beyond the box: last ring
    # the angle is measured in image space, not in box-normalised coordinates: in a wide box,
    # (5, 0.9) is at 10 deg (sector 0), though at 61 deg in normalised coordinates
    assert _bin(5, 0.9, 10, 1) == 0 * 4 + 3  # r = ||(0.5, 0.9)|| = 1.03
    # other numbers of directions / distance bins / ring extent
    assert _bin(5, 0.9, 10, 1, 8, 4, 2.0) == 0 * 4 + 2  # ring width 0.5
    assert _bin(-0.1, 0.5, 2, 1, 4, 4) == 1 * 4 + 2  # 101 deg in 4 sectors of 90
    assert _bin(-0.1, 0.5, 2, 1, 8, 1) == 2  # one distance bin: channel = sector
    # vectorised over many points, the same as the scalar definition
    g = torch.Generator().manual_seed(0)
    dx, dy = torch.randn(200, generator=g) * 3, torch.randn(200, generator=g) * 2
    hw, hh = torch.rand(200, generator=g) * 3 + 0.5, torch.rand(200, generator=g) * 3 + 0.5
    got = direction_bin(dx, dy, hw, hh)
    want = [_bin_by_definition(*map(float, v)) for v in zip(dx, dy, hw, hh)]
    assert got.tolist() == want


def test_direction_pooling_equals_per_location_definition():
    # crops of non-square boxes: every cell (i, j) copies the channel of its own bin, seen from
    # the box centre at its sampling point (x0 + (j + .5) w / S, y0 + (i + .5) h / S)
    s = 7
    boxes = torch.tensor([[0.0, 0.0, 14.0, 7.0], [3.0, 1.0, 6.0, 13.0], [2.0, 2.0, 9.0, 9.0]])
    crops = torch.randn(3, 32, s, s, generator=torch.Generator().manual_seed(1))
    out = direction_pooling(crops, boxes)
    assert out.shape == (3, 1, s, s)
    for r, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        w, h = x1 - x0, y1 - y0
        for i in range(s):
            for j in range(s):
                dx, dy = (j + 0.5) * w / s - w / 2, (i + 0.5) * h / s - h / 2
                c = _bin_by_definition(dx, dy, w / 2, h / 2)
                assert out[r, 0, i, j] == crops[r, c, i, j], (r, i, j)
    # all 32 channels are used by a 41 x 41 crop (8 sectors x 4 rings)
    assert set(crop_direction_bins(boxes[:1], 41).unique().tolist()) == set(range(32))
    with pytest.raises(ValueError, match="8 directions x 4 distance bins"):
        direction_pooling(torch.zeros(1, 16, s, s), boxes[:1])


def test_crop_and_pool_from_image_maps_per_pixel():
    # Square boxes aligned with the pixels of a stride-1 map and S = box side: ROIAlign then
    # samples pixel centres exactly, so the whole chain (crop + pool, semantic channel crop)
    # must equal the per-pixel definition on the image-level logits.
    g = torch.Generator().manual_seed(2)
    direction = torch.randn(2, 32, 12, 12, generator=g)
    semantic = torch.randn(2, 4, 12, 12, generator=g)
    boxes = [Boxes(torch.tensor([[2.0, 3.0, 6.0, 7.0]])),
             Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0], [7.0, 6.0, 11.0, 10.0]]))]  # fmt: skip
    classes = torch.tensor([3, 0, 2])
    crops = crop_and_resize(direction, boxes, stride=1, size=4, sampling_ratio=1)
    pooled = direction_pooling(crops, torch.cat([b.tensor for b in boxes]))
    sem = crop_class_channel(semantic, boxes, classes, stride=1, size=4, sampling_ratio=1)
    owners = [0, 1, 1]
    for r, (n, box) in enumerate(zip(owners, torch.cat([b.tensor for b in boxes]).tolist())):
        x0, y0, x1, y1 = (int(v) for v in box)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for i in range(4):
            for j in range(4):
                px, py = x0 + j, y0 + i  # pixel (py, px), centre (px + .5, py + .5)
                c = _bin_by_definition(px + 0.5 - cx, py + 0.5 - cy, 2.0, 2.0)
                assert pooled[r, 0, i, j].item() == pytest.approx(direction[n, c, py, px].item())
                want = semantic[n, classes[r], py, px].item()
                assert sem[r, 0, i, j].item() == pytest.approx(want)
    with pytest.raises(ValueError, match="class index"):
        crop_class_channel(semantic, boxes, torch.tensor([0, 4, 1]), 1, 4)


def _hand_built_instances():
    """12 x 12 image, 3 classes. A (class 2): rows 0-3, cols 0-6 without a notch at rows 0-1,
    cols 5-6, box (0, 0, 7, 4); C (class 1): rows 2-3, cols 2-3 on top of A, box (2, 2, 4, 4);
    B (class 0): rows 6-9, cols 5-11, box (5, 6, 12, 10)."""
    m = torch.zeros(3, 12, 12, dtype=torch.bool)
    m[0, 0:4, 0:7] = True
    m[0, 0:2, 5:7] = False
    m[1, 2:4, 2:4] = True
    m[2, 6:10, 5:12] = True
    inst = Instances((12, 12))
    inst.gt_boxes = Boxes(torch.tensor([[0, 0, 7, 4], [2, 2, 4, 4], [5, 6, 12, 10]]).float())
    inst.gt_classes = torch.tensor([2, 1, 0])
    inst.gt_masks = BitMasks(m)
    return inst


def test_dense_targets_hand_computed():
    sem, dirs = dense_targets([_hand_built_instances()], (6, 6), stride=2, num_classes=3)
    # cell (i, j) is the image point (2j + 1, 2i + 1); -1 = ignored (outside every box)
    x = -1
    assert sem[0].tolist() == [
        [2, 2, 3, x, x, x],  # (5, 1) is inside A's box but in its notch: background (3)
        [2, 1, 2, x, x, x],  # (3, 3) is on A and on C: the smaller, C
        [x, x, x, x, x, x],
        [x, x, 0, 0, 0, 0],
        [x, x, 0, 0, 0, 0],
        [x, x, x, x, x, x],
    ]
    # A: centre (3.5, 2), half size (3.5, 2). (1, 1): offset (-2.5, -1), 201.8 deg, r = 0.87
    # -> 4 * 4 + 3; (3, 1): (-.5, -1), 243.4 deg, r = .52 -> 5 * 4 + 2; (1, 3): (-2.5, 1),
    # 158.2 deg -> 3 * 4 + 3; (5, 3): (1.5, 1), 33.7 deg, r = .66 -> 0 * 4 + 2.
    # C: (3, 3) is its centre -> 0. B: centre (8.5, 8), half size (3.5, 2); rows y = 7, 9 give
    # dy = -1, 1; columns x = 5, 7, 9, 11 give dx = -3.5, -1.5, .5, 2.5.
    assert dirs[0].tolist() == [
        [19, 22, x, x, x, x],
        [15, 0, 2, x, x, x],
        [x, x, x, x, x, x],
        [x, x, 19, 18, 26, 31],  # 195.9, 213.7, 296.6, 338.2 deg
        [x, x, 15, 14, 6, 3],  # 164.1, 146.3, 63.4, 21.8 deg
        [x, x, x, x, x, x],
    ]
    # an image without instances: everything ignored
    empty = Instances((12, 12), gt_boxes=Boxes(torch.zeros(0, 4)),
                      gt_classes=torch.zeros(0, dtype=torch.long),
                      gt_masks=BitMasks(torch.zeros(0, 12, 12, dtype=torch.bool)))  # fmt: skip
    sem, dirs = dense_targets([empty], (6, 6), 2, 3)
    assert (sem == -1).all() and (dirs == -1).all()


def test_masks_on_grid_polygons_match_bitmasks():
    poly = PolygonMasks([[torch.tensor([4.0, 6, 12, 6, 12, 10, 4, 10]).numpy()]])
    bit = torch.zeros(1, 12, 14, dtype=torch.bool)
    bit[0, 6:10, 4:12] = True
    a = masks_on_grid(poly, (12, 14), 2, (6, 8))
    b = masks_on_grid(BitMasks(bit), (12, 14), 2, (6, 8))
    assert a.shape == (1, 6, 8) and torch.equal(a, b) and int(b.sum()) == 8
    # cells beyond the image (padding) are empty
    assert not masks_on_grid(BitMasks(torch.ones(1, 5, 5, dtype=torch.bool)), (5, 5), 2, (4, 4))[
        0, 3
    ].any()


def test_losses_hand_computed():
    logits = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2).requires_grad_()
    target = torch.tensor([[[1.0, 0.0]]])
    want = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert mask_bce_loss(logits, target).item() == pytest.approx(want, rel=1e-6)
    # softmax CE over valid locations only: [0, 0] -> class 1 (ln 2), [ln 3, 0] -> class 0
    # (-ln .75), the third location is ignored
    dense = torch.tensor([[0.0, math.log(3), 5.0], [0.0, 0.0, -5.0]]).view(1, 2, 1, 3)
    t = torch.tensor([[[1, 0, -1]]])
    want = (math.log(2) - math.log(0.75)) / 2
    assert dense_ce_loss(dense, t).item() == pytest.approx(want, rel=1e-6)
    none = dense_ce_loss(dense.requires_grad_(), torch.full((1, 1, 3), -1))
    assert none.item() == 0.0 and none.requires_grad
    assert mask_bce_loss(torch.zeros(0, 1, 3, 3), torch.zeros(0, 3, 3)).item() == 0.0


def _head(num_classes=3, hyper=True, **kw):
    shapes = {
        "p2": ShapeSpec(channels=32, stride=2),
        "p3": ShapeSpec(channels=32, stride=4),
        "conv1": ShapeSpec(channels=4, stride=1),
        "res2": ShapeSpec(channels=6, stride=2),
    }
    dense = MaskLabDenseHead(in_channels=32, in_strides=[2, 4], num_classes=num_classes)
    names = ["conv1", "res2"] if hyper else []
    head = MaskLabMaskHead(
        dense_head=dense, dense_in_features=["p2", "p3"], hypercolumn_features=names,
        hypercolumn_shapes=[shapes[n] for n in names], num_classes=num_classes, crop_size=9,
        refine_conv_dim=8, **kw,
    )  # fmt: skip
    g = torch.Generator().manual_seed(3)
    feats = {"p2": torch.randn(1, 32, 6, 6, generator=g), "p3": torch.randn(1, 32, 3, 3, generator=g),
             "conv1": torch.randn(1, 4, 12, 12, generator=g),
             "res2": torch.randn(1, 6, 6, 6, generator=g)}  # fmt: skip
    return head, feats


def test_mask_head_losses_and_fusion_init():
    head, feats = _head()
    assert head.fusion.weight.flatten().tolist() == [0.5, 1.0]  # paper: (0.5, 1)
    # all predictors zero: every logit is 0, so each loss is the log of its number of outcomes
    for layer in (head.dense_head.semantic, head.dense_head.direction, head.predictor):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    head.train()
    losses = head(feats, [_hand_built_instances()])
    assert losses["loss_mask_coarse"].item() == pytest.approx(math.log(2))
    assert losses["loss_mask_refined"].item() == pytest.approx(math.log(2))
    assert losses["loss_semantic"].item() == pytest.approx(math.log(4))  # K + 1 = 4
    assert losses["loss_direction"].item() == pytest.approx(math.log(32))
    # the coarse logits are 0.5 * semantic crop + 1 * pooled direction
    sem, dirs = head.dense_head([feats["p2"], feats["p3"]])
    boxes, cls = [Boxes(torch.tensor([[1.0, 2.0, 9.0, 8.0]]))], torch.tensor([2])
    coarse, refined = head.mask_logits(
        feats, torch.randn_like(sem), torch.randn_like(dirs), boxes, cls
    )
    assert refined.shape == coarse.shape == (1, 1, 9, 9)
    # weights: a zero weight drops the loss, others scale it
    head2, _ = _head(loss_weights={"loss_semantic": 0.0, "loss_direction": 2.0})
    l2 = head2.train()(feats, [_hand_built_instances()])
    assert "loss_semantic" not in l2 and set(l2) == {
        "loss_mask_coarse", "loss_mask_refined", "loss_direction"}  # fmt: skip


def test_fusion_is_half_semantic_plus_direction():
    head, feats = _head(hyper=False)
    g = torch.Generator().manual_seed(4)
    sem, dirs = torch.randn(1, 4, 6, 6, generator=g), torch.randn(1, 32, 6, 6, generator=g)
    boxes, cls = [Boxes(torch.tensor([[1.0, 2.0, 9.0, 8.0]]))], torch.tensor([1])
    coarse, refined = head.mask_logits(feats, sem, dirs, boxes, cls)
    assert refined is None
    s = crop_class_channel(sem, boxes, cls, 2, 9)
    d = direction_pooling(crop_and_resize(dirs, boxes, 2, 9), boxes[0].tensor)
    assert torch.allclose(coarse, 0.5 * s + d, atol=1e-6)


def test_mask_head_learns_and_predicts():
    torch.manual_seed(0)
    head, feats = _head()
    inst = [_hand_built_instances()]
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    head.train()
    first = None
    for _ in range(15):
        loss = sum(head(feats, inst).values())
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first
    head.eval()
    det = Instances((12, 12), pred_boxes=Boxes(torch.tensor([[0.0, 0, 7, 4], [5, 6, 12, 10]])),
                    pred_classes=torch.tensor([2, 0]))  # fmt: skip
    (out,) = head(feats, [det])
    assert out.pred_masks.shape == (2, 1, 9, 9)
    assert ((out.pred_masks >= 0) & (out.pred_masks <= 1)).all()


def test_mask_crop_targets():
    t = mask_crop_targets([_hand_built_instances()], 7)
    assert t.shape == (3, 7, 7)
    # ROIAlign targets as detectron2's for Mask R-CNN: bilinear at the box edges (the corners
    # fall below 0.5); C and B fill their boxes, A's notch is its top-right corner
    assert t[1, 1:-1, 1:-1].all() and t[2, 1:-1, 1:-1].all()
    assert not t[0, :2, -2:].any() and t[0, 3:-1, 1:-1].all()


def _cfg(repo_root, opts=()):
    from instseg_d2.engine import build_config

    return build_config(os.path.join(repo_root, SHAPES_CFG), ["MODEL.ROI_HEADS.NUM_CLASSES", "5",
                        "MODEL.DEVICE", "cpu"] + list(opts))  # fmt: skip


def test_backbone_is_detectron2_resnet_fpn(repo_root):
    from detectron2.modeling import build_backbone

    cfg = _cfg(repo_root)
    ours = build_backbone(cfg)
    cfg2 = cfg.clone()
    cfg2.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    ref = build_backbone(cfg2)
    # the same parameters under bottom_up.* and fpn.*
    sd = {k.replace("fpn.", "", 1) if k.startswith("fpn.") else k: v
          for k, v in ours.state_dict().items()}  # fmt: skip
    assert set(sd) == set(ref.state_dict())
    ref.load_state_dict(sd)
    ours.eval(), ref.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert set(a) == set(b) | {"conv1", "res2"}
    for k in b:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert a["conv1"].shape == (1, 64, 32, 48) and ours.output_shape()["conv1"].stride == 2
    assert a["res2"].shape == (1, 64, 16, 24)


def test_mask_rcnn_checkpoint_loads_into_masklab(repo_root, tmp_path, checkpoint_log):
    # MaskLab's reference detector is detectron2's Mask R-CNN (ResNet-FPN, RPN, box head): its
    # checkpoint, with detectron2's names and shapes, loads with nothing unexpected and nothing
    # missing but MaskLab's own mask branch (dense logits, fusion, refinement).
    from detectron2.modeling import build_model

    from instseg_d2.engine import InstSegCheckpointer, build_config
    from instseg_d2.engine.conversion import convert_reference_checkpoint, model_parts

    mrcnn_cfg = build_config(os.path.join(repo_root, "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"),
                             ["MODEL.ROI_HEADS.NUM_CLASSES", "5", "MODEL.DEVICE", "cpu"])  # fmt: skip
    torch.manual_seed(0)
    ref, ours = build_model(mrcnn_cfg), build_model(_cfg(repo_root))
    ref_sd = ref.state_dict()
    assert "backbone.fpn_lateral2.weight" in ref_sd  # detectron2's FPN names
    detector = {k: v for k, v in ref_sd.items() if not k.startswith("roi_heads.mask_head.")}
    converted, report = convert_reference_checkpoint(detector, model_parts(ours))
    assert report.sources == ["detectron2 GeneralizedRCNN", "detectron2 ResNet-FPN"]
    assert report.renamed == sum(k.startswith("backbone.fpn_") for k in detector) > 0
    incompatible = ours.load_state_dict(converted, strict=False)
    assert not incompatible.unexpected_keys, incompatible.unexpected_keys
    assert set(incompatible.missing_keys) == {
        k for k in ours.state_dict() if k.startswith("roi_heads.mask_head.")
    }
    # the whole Mask R-CNN file through the project's checkpointer (its mask predictor, of
    # another shape, is skipped): the detector's values arrive
    InstSegCheckpointer(ref, str(tmp_path)).save("mask_rcnn")
    ours = build_model(_cfg(repo_root))
    InstSegCheckpointer(ours).load(str(tmp_path / "mask_rcnn.pth"))
    assert any("recognised a checkpoint of detectron2 GeneralizedRCNN + detectron2 ResNet-FPN"
               in m for m in checkpoint_log)  # fmt: skip
    got = ours.state_dict()
    for k in ("backbone.fpn_lateral2.weight", "backbone.fpn_output5.bias",
              "backbone.bottom_up.res4.1.conv2.weight", "proposal_generator.rpn_head.conv.weight",
              "roi_heads.box_head.fc1.weight", "roi_heads.box_predictor.cls_score.weight"):  # fmt: skip
        name = k.replace("backbone.fpn_", "backbone.fpn.fpn_")
        assert torch.equal(got[name], ref_sd[k]), k


def test_config_errors(repo_root):
    from detectron2.modeling import build_model

    cfg = get_cfg()
    add_masklab_config(cfg)
    assert cfg.MODEL.MASKLAB.CROP_SIZE == 41 and cfg.MODEL.MASKLAB.NUM_DIRECTIONS == 8
    assert list(cfg.MODEL.MASKLAB.FUSION_INIT) == [0.5, 1.0]
    with pytest.raises(ValueError, match="ROI_MASK_HEAD.NAME 'MaskLabMaskHead'.*MaskRCNNConv"):
        build_model(_cfg(repo_root, ["MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead"]))
    with pytest.raises(ValueError, match="HYPERCOLUMN_FEATURES.*'res7'"):
        build_model(_cfg(repo_root, ["MODEL.MASKLAB.HYPERCOLUMN_FEATURES", "['res7']"]))
    with pytest.raises(ValueError, match="HYPERCOLUMN_FEATURES.*conv1"):
        build_model(_cfg(repo_root, ["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone"]))
    with pytest.raises(ValueError, match="DENSE_IN_FEATURES.*'p9'"):
        build_model(_cfg(repo_root, ["MODEL.MASKLAB.DENSE_IN_FEATURES", "['p2', 'p9']"]))


def test_end_to_end_train_and_evaluate(tiny_shapes, tmp_path, repo_root):
    from instseg_d2.testing import loss_history, train_and_evaluate

    out = str(tmp_path / "run")
    # score threshold 0 so that the untrained detector's boxes reach the mask head in eval
    res = train_and_evaluate(os.path.join(repo_root, SHAPES_CFG), out,
                             ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                              "TEST.DETECTIONS_PER_IMAGE", "5"])  # fmt: skip
    assert set(res) == {"bbox", "segm", "boundary"}
    assert math.isfinite(res["segm"]["AP"])  # there were mask predictions to score
    for key in ("loss_mask_coarse", "loss_mask_refined", "loss_semantic", "loss_direction"):
        vals = loss_history(out, key)
        assert vals and all(math.isfinite(v) for v in vals), key
    assert os.path.isfile(os.path.join(out, "model_final.pth"))


def _pooler_and_maps():
    from detectron2.modeling.poolers import ROIPooler

    pooler = ROIPooler(3, (1 / 2, 1 / 4), sampling_ratio=2, pooler_type="ROIAlignV2",
                       canonical_box_size=8, canonical_level=2)  # fmt: skip
    g = torch.Generator().manual_seed(5)
    maps = [torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 8, 8, generator=g)]
    boxes = [Boxes(torch.tensor([[2.0, 3.0, 9.0, 8.0], [4.0, 4.0, 28.0, 26.0]])),
             Boxes(torch.tensor([[10.0, 1.0, 15.0, 12.0]]))]  # fmt: skip
    return pooler, maps, boxes


def test_deformable_crop_and_resize():
    from torchvision.ops import roi_align

    from masklab_d2 import DeformableCropAndResize

    pooler, maps, boxes = _pooler_and_maps()
    dcr = DeformableCropAndResize(pooler, 4, sub_box_size=2, offset_scale=0.1, offset_dim=8)
    # zero offsets (the initialisation): exactly ROIAlignV2 with 2 x 2 samples per cell
    out = dcr(maps, boxes)
    assert out.shape == (3, 4, 3, 3)
    assert torch.allclose(out, pooler(maps, boxes), atol=1e-5)
    # a constant offset o moves every sub-box by gamma * o * (w, h): the whole box shifts
    with torch.no_grad():
        dcr.offset_net[1].bias.copy_(torch.tensor([1.0, -0.5]))
    shifted = []
    for b in boxes:
        t = b.tensor.clone()
        w, h = t[:, 2] - t[:, 0], t[:, 3] - t[:, 1]
        t[:, 0::2] += 0.1 * w[:, None]
        t[:, 1::2] -= 0.05 * h[:, None]
        shifted.append(Boxes(t))
    assert torch.allclose(dcr(maps, boxes), pooler(maps, shifted), atol=1e-5)
    # levels as detectron2's: the large box (24 x 22) is read from the stride-4 map
    big = roi_align(maps[1], torch.tensor([[0.0, 4, 4, 28, 26]]), 3, 1 / 4, 2, aligned=True)
    assert torch.allclose(pooler(maps, boxes)[1], big[0], atol=1e-6)
    # the offsets are learned: gradients reach the offset network through the second crop
    dcr.zero_grad()
    (dcr(maps, boxes) * torch.randn(3, 4, 3, 3)).sum().backward()
    assert dcr.offset_net[1].weight.grad.abs().sum() > 0
    # no boxes
    empty = dcr(maps, [Boxes(torch.zeros(0, 4)), Boxes(torch.zeros(0, 4))])
    assert empty.shape == (0, 4, 3, 3)


def test_model_with_deformable_crop_and_resize_trains(repo_root):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from masklab_d2 import DeformableCropAndResize

    cfg = _cfg(repo_root, ["MODEL.MASKLAB.DEFORMABLE_CROP_AND_RESIZE", "True",
                           "MODEL.MASKLAB.DEFORMABLE_OFFSET_DIM", "16"])  # fmt: skip
    model = build_model(cfg)
    assert isinstance(model.roi_heads.box_pooler, DeformableCropAndResize)
    inst = _hand_built_instances()
    inst._image_size = (64, 64)
    inst.gt_boxes.tensor *= 4
    inst.gt_masks = BitMasks(
        torch.nn.functional.interpolate(inst.gt_masks.tensor[None].float(), scale_factor=4)[0] > 0
    )
    batch = [{"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), "instances": inst,
              "height": 64, "width": 64}]  # fmt: skip
    model.train()
    with EventStorage(0):
        losses = model(batch)
    assert {"loss_cls", "loss_mask_refined", "loss_direction"} <= set(losses)
    sum(losses.values()).backward()
    assert model.roi_heads.box_pooler.offset_net[1].weight.grad is not None
