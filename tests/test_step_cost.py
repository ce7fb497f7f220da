"""instseg_d2.benchmark.step_cost, tools/step_cost.py and DVIS's step-cost diagnostic on the tiny
shapes splits (1-2 images)."""

import os

import numpy as np
import pytest
import torch

from dvis_d2.diagnostics import CANDIDATES
from dvis_d2.diagnostics import main as dvis_diagnostics
from instseg_d2.benchmark.step_cost import draw_batches, measure_train_steps
from instseg_d2.testing import build_tiny_cfg

MASK_RCNN = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"
SEMICONV = "configs/SemiConv/shapes_SemiConv_R_18.yaml"
DVIS = "configs/DVIS/shapes_DVIS_R_18.yaml"
SMALL = ["INPUT.MIN_SIZE_TRAIN", "(64,)"]  # the tiny splits' 96 px are still more than needed


def _cfg(repo_root, tmp_path, config=MASK_RCNN, opts=()):
    return build_tiny_cfg(os.path.join(repo_root, config), str(tmp_path), SMALL + list(opts))


def test_timings_and_breakdown_named_after_children(tiny_shapes, tmp_path, repo_root):
    cfg = _cfg(repo_root, tmp_path)
    batches = draw_batches(cfg, batch_size=1, num_batches=3)
    threads = torch.get_num_threads()
    cost = measure_train_steps(cfg, batches, steps=2, warmup=1, breakdown=True)
    assert torch.get_num_threads() == threads  # restored
    assert len(cost.cpu_s) == len(cost.wall_s) == len(cost.scalars) == 2
    assert min(cost.cpu_s + cost.wall_s) > 0
    assert cost.cpu_median == pytest.approx(sum(cost.cpu_s) / 2) == cost.cpu_mean
    assert cost.flops is None
    assert list(cost.breakdown) == [
        "backbone", "proposal_generator", "roi_heads", "forward", "backward+step"
    ]  # fmt: skip
    parts = [cost.breakdown[k] for k in ("backbone", "proposal_generator", "roi_heads")]
    assert min(parts) > 0 and sum(parts) <= cost.breakdown["forward"] + 1e-6
    whole = cost.breakdown["forward"] + cost.breakdown["backward+step"]
    assert whole == pytest.approx(cost.cpu_mean, rel=0.05)
    assert "roi_head/num_fg_samples" in cost.scalars[0]  # what the model logged in the step
    chosen = measure_train_steps(cfg, batches[:1], 1, 0, breakdown=["roi_heads.mask_head"])
    assert list(chosen.breakdown) == ["roi_heads.mask_head", "forward", "backward+step"]
    with pytest.raises(ValueError, match="warmup >= 1"):
        measure_train_steps(cfg, batches, steps=1, warmup=0, flops=True)


def test_two_configs_get_identical_batches(tiny_shapes, tmp_path, repo_root):
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    a = draw_batches(_cfg(repo_root, tmp_path), batch_size=2, num_batches=9)  # > 16 images
    assert (np.random.get_state()[1] == before).all()  # the global generator is left as it was
    b = draw_batches(_cfg(repo_root, tmp_path, SEMICONV), batch_size=2, num_batches=9)
    other = draw_batches(_cfg(repo_root, tmp_path), batch_size=2, num_batches=9, seed=1)
    assert [len(x) for x in a] == [2] * 9

    def same(x, y):
        return x["file_name"] == y["file_name"] and torch.equal(x["image"], y["image"])

    pairs = [(x, y) for ba, bb in zip(a, b) for x, y in zip(ba, bb)]
    assert all(same(x, y) for x, y in pairs)
    for x, y in pairs:
        assert torch.equal(x["instances"].gt_classes, y["instances"].gt_classes)
        assert torch.equal(x["instances"].gt_boxes.tensor, y["instances"].gt_boxes.tensor)
    assert not all(same(x, y) for ba, bo in zip(a, other) for x, y in zip(ba, bo))


def test_flops_positive_and_grow_with_batch(tiny_shapes, tmp_path, repo_root):
    cfg = _cfg(repo_root, tmp_path)
    two = draw_batches(cfg, batch_size=2, num_batches=1)
    one = [two[0][:1]]
    f1 = measure_train_steps(cfg, one, steps=1, warmup=1, flops=True).flops
    f2 = measure_train_steps(cfg, two, steps=1, warmup=1, flops=True).flops
    assert 0 < f1 < f2


def test_tool_ratio_and_dvis_extra_candidates(tiny_shapes, tmp_path, repo_root, capsys, load_tool):
    tool = load_tool("step_cost")
    common = ["--batch", "1", "--steps", "1", "--warmup", "0", "--opts"] + _tiny_opts(tmp_path)
    configs = ["--config-file", f"{repo_root}/{MASK_RCNN}", "--config-file", f"{repo_root}/{DVIS}"]
    plain = tool.main(configs + ["--scalar", CANDIDATES] + common)
    out = capsys.readouterr().out
    assert [os.path.basename(os.path.dirname(r[0])) for r in plain] == ["MaskRCNN", "DVIS"]
    assert out.startswith("machine: ") and "(1.00x the first)" in out
    assert "differ from the first" not in out
    assert f"{CANDIDATES} {plain[1][1].scalar_mean(CANDIDATES):.1f}" in out

    # DVIS's diagnostic: the same measurement with 7 rectangles added to DVIS's candidates
    rows = dvis_diagnostics(["step-cost"] + configs + ["--extra-candidates", "7"] + common)
    out = capsys.readouterr().out
    assert out.startswith(f"7 rectangles added to the candidates of: {repo_root}/{DVIS}\n")
    with_extra = rows[1][1].scalar_mean(CANDIDATES)
    assert f"{CANDIDATES} {with_extra:.1f}" in out
    # the same batch and weights: the real candidates + 7 rectangles; Mask R-CNN timed as it is
    assert with_extra == plain[1][1].scalar_mean(CANDIDATES) + 7
    assert rows[0][1].scalar_mean(CANDIDATES) is None
    with pytest.raises(SystemExit):  # --extra-candidates needs a DVIS config
        dvis_diagnostics(["step-cost"] + configs[:2] + ["--extra-candidates", "2"] + common)


def _tiny_opts(tmp_path):
    from instseg_d2.testing import TINY_OPTS

    return list(TINY_OPTS) + SMALL + ["OUTPUT_DIR", str(tmp_path)]
