"""DVIS model: verification head, inference format, training steps, end-to-end on tiny shapes."""

import copy
import math

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from dvis_d2 import Candidates, Discretizer, VerificationHead
from dvis_d2.diagnostics import add_rectangle_candidates, main
from dvis_d2.verification import verification_losses, verification_scores
from instseg_d2.data import InstanceDatasetMapper
from instseg_d2.testing import build_tiny_cfg, train_and_evaluate
from instseg_d2.utils.profiling import record_stages

CONFIG = "configs/DVIS/shapes_DVIS_R_18.yaml"


def _model_and_data(repo_root, tmp_path, opts=(), train=True, n=2):
    cfg = build_tiny_cfg(f"{repo_root}/{CONFIG}", str(tmp_path), list(opts))
    torch.manual_seed(0)
    model = build_model(cfg)
    mapper = InstanceDatasetMapper(cfg, train)
    name = cfg.DATASETS.TRAIN[0] if train else cfg.DATASETS.TEST[0]
    data = [mapper(d) for d in DatasetCatalog.get(name)[:n]]
    return cfg, model, data


def test_verification_scores_and_losses_hand_computed():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))  # 2 classes + bg
    iou = torch.tensor([0.8, 1.4])
    scores, classes = verification_scores(logits, iou, cls_weight=0.5)
    assert classes.tolist() == [1, 0]
    assert scores.tolist() == pytest.approx([0.5 * 0.5 + 0.5 * 0.8, 0.5 * 0.6 + 0.5 * 1.0])
    loss_cls, loss_iou = verification_losses(
        logits, iou, torch.tensor([1, -1]), torch.tensor([0.75, 1.0]), theta=0.1
    )
    assert loss_cls.item() == pytest.approx(-math.log(0.5))  # the ignored one does not count
    assert loss_iou.item() == pytest.approx((0.05**2 / 0.2 + 0.4 - 0.05) / 2)


def test_verification_head_shapes_and_boxes():
    head = VerificationHead(in_channels=8, num_classes=3, roi_size=6, conv_dim=32, fc_dim=16)
    masks = torch.zeros(3, 8, 10, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, :, :] = True
    masks[2, 7, 9] = True
    c = Candidates(masks, torch.ones(3), torch.zeros(3).long())
    boxes = head.boxes(masks, (30, 40))  # image 30x40 at stride 4 -> label map 8x10
    # mask 0: cells x 2..4, y 1..2 -> (8, 4, 20, 12), enlarged by 20% around the centre
    assert boxes[0].tolist() == pytest.approx([6.8, 3.2, 21.2, 12.8])
    assert boxes[1].tolist() == pytest.approx([0, 0, 40, 30])  # clipped to the image
    empty = Candidates(masks[:0], torch.zeros(0), torch.zeros(0).long())
    feats = torch.randn(2, 8, 4, 5)
    logits, iou = head(feats, [c, empty], [(30, 40), (30, 40)])
    assert logits.shape == (3, 4) and iou.shape == (3,) and (iou >= 0).all()
    logits, iou = head(feats, [empty, empty], [(30, 40), (30, 40)])
    assert logits.shape == (0, 4) and iou.shape == (0,)


def test_inference_format_stages_and_cap(tiny_shapes, tmp_path, repo_root):
    _, model, data = _model_and_data(repo_root, tmp_path, train=False)
    model.eval()
    model.score_thresh = 0.0

    def plateau_head(feature):  # a label map with 3 plateaus instead of the untrained head
        z = torch.zeros(feature.shape[0], 2 * feature.shape[2], 2 * feature.shape[3])
        z[:, 2:8, 2:8], z[:, 2:8, 12:20], z[:, 12:18, 4:10] = 2.0, 3.0, 5.0
        return z

    model.label_head.forward = plateau_head
    seen = []
    model.discretizer.register_forward_hook(lambda m, i, o: seen.append([len(c) for c in o]))
    with record_stages() as st:
        out = model(data)
    assert set(st) == {"discretization", "verification"}
    assert seen == [[3, 3]]
    for o, x in zip(out, data):
        inst = o["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert inst.pred_masks.dtype == torch.bool and len(inst) == 3
        assert inst.pred_masks.shape[1:] == (x["height"], x["width"])
        assert inst.has("pred_boxes") and inst.has("scores") and inst.has("pred_classes")
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
    raw = model.inference(data, do_postprocess=False)
    h, w = data[0]["image"].shape[1:]
    assert raw[0]["instances"].pred_masks.shape[1:] == (
        math.ceil(h / 32) * 8,
        math.ceil(w / 32) * 8,
    )
    model.max_detections = 2
    assert [len(o["instances"]) for o in model(data)] == [2, 2]


def test_training_steps_lower_the_loss_and_permutation_invariance(tiny_shapes, tmp_path, repo_root):
    _, model, data = _model_and_data(repo_root, tmp_path, ["MODEL.DVIS.LOSS.PI_SAMPLING", "random"])
    model.train()
    shuffled = copy.deepcopy(data)
    for x in shuffled:  # the same instances in another order: other ids, same partition
        inst = x["instances"]
        x["instances"] = inst[torch.randperm(len(inst), generator=torch.Generator().manual_seed(3))]
    with EventStorage():
        torch.manual_seed(5)
        a = model(data)
        torch.manual_seed(5)
        b = model(shuffled)
        for k in a:
            assert a[k].item() == pytest.approx(b[k].item(), rel=1e-5), k
        assert set(a) == {"loss_binary", "loss_pi", "loss_ms", "loss_quant", "loss_cls", "loss_iou"}
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        first = None
        for _ in range(4):
            losses = model(data)
            total = sum(losses.values())
            first = total.item() if first is None else first
            opt.zero_grad()
            total.backward()
            opt.step()
        assert sum(model(data).values()).item() < first


def test_bad_config_names_the_key(tiny_shapes, tmp_path, repo_root):
    with pytest.raises(ValueError, match="PI_SAMPLING"):
        _model_and_data(repo_root, tmp_path, ["MODEL.DVIS.LOSS.PI_SAMPLING", "grid"])
    with pytest.raises(ValueError, match="IN_FEATURE"):
        _model_and_data(repo_root, tmp_path, ["MODEL.DVIS.IN_FEATURE", "p9"])
    with pytest.raises(ValueError, match="one entry per bandwidth"):
        _model_and_data(repo_root, tmp_path, ["MODEL.DVIS.MEANSHIFT.MIN_AREA", "(3,)"])


def test_end_to_end_train_and_eval_and_candidate_count(tiny_shapes, tmp_path, repo_root, capsys):
    res = train_and_evaluate(f"{repo_root}/{CONFIG}", str(tmp_path))
    assert "segm" in res and "bbox" in res
    weights = str(tmp_path / "model_final.pth")
    config = ["candidates", "--config-file", f"{repo_root}/{CONFIG}", "--num-images", "2"]
    main(config + ["--weights", weights, "--count-ops", "DATASETS.TEST", "('shapes_tiny_val',)"]
         + ["MODEL.DEVICE", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert "shapes_tiny_val: 2 images" in out and "candidates per image: mean" in out
    assert "from bandwidth 0.9" in out and "from bandwidth 0.4" in out
    shares = {
        line.split(":")[0].strip(): float(line.split("(")[-1].split()[0])
        for line in out.splitlines()
        if line.endswith("%)")
    }
    assert set(shares) == {"label-map network and the rest", "discretization", "verification"}
    assert abs(sum(shares.values()) - 100) < 0.1 and shares["discretization"] > 0

    # randomly initialised, with 3 rectangles added per image: at least 3 candidates each
    main(config + ["--weights", "", "--count-ops", "--extra-candidates", "3"]
         + ["DATASETS.TEST", "('shapes_tiny_val',)", "MODEL.DEVICE", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert "randomly initialised" in out and "3 rectangles added" in out
    counts = next(line for line in out.splitlines() if line.startswith("candidates per image"))
    assert int(counts.split("min ")[1].split(",")[0]) >= 3


def test_rectangle_candidates_added_after_the_real_ones():
    disc = Discretizer(bandwidths=(0.9,), min_area=(3,), num_keep=(5,))
    f = torch.zeros(2, 12, 16)
    f[0, 2:6, 3:8] = 2.0  # one real segment in image 0, none in image 1
    valid = torch.ones(2, 12, 16, dtype=torch.bool)
    real = disc(f, valid)
    handle = add_rectangle_candidates(disc, 7)
    out, again = disc(f, valid), disc(f, valid)
    assert [len(c) for c in real] == [1, 0] and [len(c) for c in out] == [8, 7]
    assert torch.equal(out[0].masks[:1], real[0].masks)
    assert all(torch.equal(a.masks, b.masks) for a, b in zip(out, again))  # same each call
    areas = out[1].masks.flatten(1).sum(1)
    assert areas.min() >= 9 and areas.max() <= 64 and out[1].values.eq(1).all()
    handle.remove()  # the discretizer is left as it was
    assert [len(c) for c in disc(f, valid)] == [1, 0]


def test_detached_verifier_features_keep_its_losses_out_of_the_backbone(
    tiny_shapes, repo_root, tmp_path
):
    def backbone_grad(opts):
        _, model, data = _model_and_data(repo_root, tmp_path, opts)
        model.train()
        with EventStorage(0):
            losses = model(data)
        (losses["loss_cls"] + losses["loss_iou"]).backward()
        grads = [p.grad for p in model.backbone.parameters() if p.requires_grad]
        return sum(float(g.abs().sum()) for g in grads if g is not None)

    assert backbone_grad([]) > 0
    assert backbone_grad(["MODEL.DVIS.VERIFY.DETACH_FEATURES", "True"]) == 0


def test_gt_candidates_join_the_verification_after_their_start_iteration(
    tiny_shapes, repo_root, tmp_path
):
    opts = ["MODEL.DVIS.VERIFY.GT_CANDIDATES_START_ITER", "5"]
    _, model, data = _model_and_data(repo_root, tmp_path, opts)
    model.train()
    seen = []
    model.verifier.register_forward_hook(lambda m, args, out: seen.append(out[0].shape[0]))
    num_gt = sum(int(x["instances"].gt_masks.tensor.flatten(1).any(1).sum()) for x in data)
    for it in (4, 5):
        with EventStorage(it):
            model(data)
    # untrained label map: (almost) no candidates of its own, so the GT masks are the difference
    assert seen[1] - seen[0] == num_gt


def test_ceiling_of_a_perfect_label_map(tiny_shapes, repo_root, capsys):
    """Every GT instance as its own stride-4 segment, through the model's post-processing: near
    perfect at IoU 0.5, below 100 at IoU 0.75 (the stride-4 round trip blurs the edges)."""
    res = main(["ceiling", "--config-file", f"{repo_root}/{CONFIG}", "DATASETS.TEST",
                "('shapes_tiny_val',)", "MODEL.DEVICE", "cpu"])  # fmt: skip
    assert res["segm"]["AP50"] > 90 and 20 < res["segm"]["AP75"] < 100
    assert res["segm"]["AP"] < 90 and res["boundary"]["AP"] < res["segm"]["AP"]
    assert "perfect label map at stride 4" in capsys.readouterr().out


def test_grad_norms_per_loss_term(tiny_shapes, repo_root, capsys):
    """Every weighted term reaches the backbone; with the verifier's input detached, its two
    losses do not."""
    from instseg_d2.testing import TINY_OPTS

    argv = ["grad-norms", "--config-file", f"{repo_root}/{CONFIG}", "--weights", "init",
            "--num-batches", "1"] + TINY_OPTS  # fmt: skip
    norms = main(argv)
    assert set(norms) == {"loss_binary", "loss_pi", "loss_ms", "loss_quant", "loss_cls", "loss_iou"}
    assert all(math.isfinite(v) and v > 0 for v in norms.values())
    assert "gradient norm on the backbone + FPN" in capsys.readouterr().out
    detached = main(argv + ["MODEL.DVIS.VERIFY.DETACH_FEATURES", "True"])
    assert detached["loss_cls"] == 0 and detached["loss_iou"] == 0
    assert detached["loss_binary"] == pytest.approx(norms["loss_binary"], rel=1e-4)
