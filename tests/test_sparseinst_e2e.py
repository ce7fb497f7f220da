"""SparseInst end to end: inference sizes, training lowers the loss, and train + eval through the
Trainer on the tiny shapes splits (its export: tests/test_export.py)."""

import pytest
import torch
from detectron2.data import DatasetCatalog

from instseg_d2.testing import TINY_OPTS, build_tiny_cfg, loss_history, train_and_evaluate
from sparseinst_d2.diagnostics import main

CONFIG = "configs/SparseInst/shapes_SparseInst_GIAM_R_18.yaml"


@pytest.fixture(scope="module")
def tiny_model(tiny_shapes, repo_root, tmp_path_factory):
    """The shapes model after a few training steps (so its outputs are not all alike), and
    test images from shapes_tiny_val as the test loader gives them."""
    from detectron2.utils.events import EventStorage

    from instseg_d2.engine import Trainer

    cfg = build_tiny_cfg(f"{repo_root}/{CONFIG}", str(tmp_path_factory.mktemp("si")))
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    opt = Trainer.build_optimizer(cfg, model)
    batches = iter(Trainer.build_train_loader(cfg))
    with EventStorage(0):
        for _ in range(3):
            losses = model(next(batches))
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
    model.eval()
    loader = Trainer.build_test_loader(cfg, "shapes_tiny_val")
    images = [b[0] for _, b in zip(range(2), loader)]
    return model, images


def test_inference_sizes_and_boxes(tiny_model):
    from instseg_d2.layers import boxes_from_masks

    model, images = tiny_model
    with torch.no_grad():
        (out,) = model([dict(images[1], height=50, width=70)])
        (raw,) = model.inference([images[1]], do_postprocess=False)
    inst, raw = out["instances"], raw["instances"]
    assert inst.image_size == (50, 70) and inst.pred_masks.shape[1:] == (50, 70)
    assert inst.pred_masks.dtype == torch.bool and 0 < len(inst) <= model.max_detections
    assert torch.equal(inst.pred_boxes.tensor, boxes_from_masks(inst.pred_masks))
    # raw: the same detections, masks as probabilities at stride 4 of the (96x96) input
    assert raw.pred_mask_probs.shape[1:] == (24, 24)
    assert torch.equal(inst.scores, raw.scores) and torch.equal(inst.pred_classes, raw.pred_classes)


def test_training_lowers_loss(tiny_shapes, repo_root, tmp_path):
    """AdamW steps (with a short warm-up, as the schedule has) on one batch lower the loss."""
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    from instseg_d2.engine import Trainer

    opts = ["SOLVER.WARMUP_ITERS", "5", "SOLVER.WARMUP_FACTOR", "0.2", "SOLVER.MAX_ITER", "15"]
    cfg = build_tiny_cfg(f"{repo_root}/{CONFIG}", str(tmp_path), opts)
    seed_all_rng(1)  # the model's init and the loader's sampling and augmentation
    model = Trainer.build_model(cfg)
    opt = Trainer.build_optimizer(cfg, model)
    sched = Trainer.build_lr_scheduler(cfg, opt)
    batch = next(iter(Trainer.build_train_loader(cfg)))
    history = []
    with EventStorage(0):
        for _ in range(15):
            losses = model(batch)
            history.append({k: v.item() for k, v in losses.items()})
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            sched.step()
    total = [sum(h.values()) for h in history]
    assert sum(total[-3:]) / 3 < 0.8 * total[0]
    for k in ("loss_ce", "loss_objectness"):
        assert history[-1][k] < history[0][k], k


def test_end_to_end_train_and_eval(tiny_shapes, repo_root, tmp_path):
    res = train_and_evaluate(f"{repo_root}/{CONFIG}", str(tmp_path))
    assert set(res) == {"bbox", "segm", "boundary"}
    assert 0.0 <= res["segm"]["AP"] <= 100.0
    losses = loss_history(str(tmp_path))
    assert len(losses) >= 1 and all(v == v and v < 1e4 for v in losses)  # finite

    # the matched-query statistics of the trained model: one entry per GT object of the images
    weights = str(tmp_path / "model_final.pth")
    argv = ["--config-file", f"{repo_root}/{CONFIG}", "--weights", weights, "--num-images", "2"]
    stats = main(["match-stats"] + argv + ["--probe", "2"] + list(TINY_OPTS))
    num_objects = sum(len(d["annotations"]) for d in DatasetCatalog.get("shapes_tiny_val")[:2])
    assert len(stats["dice"]) == len(stats["top1"]) == num_objects > 0
    probe = stats.pop("probe")
    assert set(probe) == {"backbone res3", "backbone res5", "encoder", "instance branch"}
    assert all(0 <= v <= 1 for v in probe.values())
    assert all(0 <= v <= 1 for k in stats for v in stats[k])
    assert set(stats["top1"]) <= {0.0, 1.0}
    assert len(stats["unmatched_p"]) == 2 * 100 - num_objects  # N = 100 queries per image
    assert len(stats["iam_on_object"]) == len(stats["object_area"]) == num_objects
