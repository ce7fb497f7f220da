"""tools/benchmark.py on a tiny trained Mask R-CNN: every column, the files, the machine."""

import csv
import json
import os

import torch
from detectron2.data import MetadataCatalog

from instseg_d2.benchmark.report import markdown_table
from instseg_d2.testing import train_and_evaluate
from instseg_d2.utils.profiling import OUTSIDE, count_stage_ops, record_stages, stage

MASK_RCNN = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"


def test_benchmark_tool(tiny_shapes, tmp_path, repo_root, load_tool):
    train_and_evaluate(os.path.join(repo_root, MASK_RCNN), str(tmp_path / "run"))
    weights = str(tmp_path / "run" / "model_final.pth")
    register = []
    for name in tiny_shapes:
        meta = MetadataCatalog.get(name)
        register += ["--register", f"{name}={meta.json_file}:{meta.image_root}"]
    out = tmp_path / "bench"
    tool = load_tool("benchmark")
    rows = tool.main(
        ["--config-file", os.path.join(repo_root, MASK_RCNN), "--weights", weights,
         "--config-file", os.path.join(repo_root, MASK_RCNN), "--weights", "-",
         "--name", "trained", "--name", "untrained",
         "--dataset", "shapes_tiny_val", "--device", "cpu", "--input-size", "64x96",
         "--iters", "2", "--warmup", "1", "--num-images", "2", "--train-memory",
         "--output-dir", str(out)] + register
        + ["--opts", "DATASETS.TRAIN", "('shapes_tiny_train',)"]
    )  # fmt: skip
    trained, untrained = rows
    assert "error" not in trained, trained
    for key in ("params_M", "gflops", "model_ms", "e2e_ms", "peak_mem_MB", "train_peak_mem_MB"):
        assert trained[key] > 0, key
    assert trained["input"] == "64x96"
    assert set(trained["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert "bbox" in trained and "segm" not in untrained  # no weights: no AP
    assert trained["params_M"] == untrained["params_M"]
    md = (out / "benchmark.md").read_text()
    assert md.startswith("Machine: ") and "torch threads" in md and "| trained |" in md
    with open(out / "benchmark.csv") as f:
        table = list(csv.reader(f))
    assert table[0][:5] == ["model", "params (M)", "GFLOPs", "model ms", "e2e ms"]
    assert [r[0] for r in table[1:]] == ["trained", "untrained"]
    assert (out / "benchmark.png").stat().st_size > 1000
    assert json.loads((out / "benchmark.json").read_text())["machine"]["cpu"]


def test_stages_recorded_only_when_asked():
    with stage("a"):
        pass  # no recording: nothing happens
    with record_stages() as st:
        with stage("a"):
            sum(range(1000))
        with stage("a"):
            pass
    assert set(st) == {"a"} and st["a"] > 0
    table = markdown_table([{"name": "m", "e2e_ms": 2.0, "stages_ms": {"discretize": 1.0}}])
    assert "discretize ms" in table.splitlines()[0] and "| m |" in table


def test_stage_op_counts():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with count_stage_ops() as counts:
        x = a @ b  # 2 * 3 * 4 * 5 multiply-adds
        with stage("s"):
            y = x.exp()  # 15 elements
            (y > 0).nonzero()  # integer / boolean outputs count nothing
            with stage("t"):
                y.sum()  # 1 element, in the innermost stage
    assert dict(counts) == {OUTSIDE: 120.0, "s": 15.0, "t": 1.0}
    with count_stage_ops() as counts:
        pass
    assert not counts
    with stage("s"):  # nothing is counted outside the context
        a.exp()
    assert not counts


def test_dataset_only_feeds_images_to_a_latency_run(tiny_shapes, tmp_path, repo_root, load_tool):
    """A COCO config timed on shapes images keeps its 80 classes (no class-count clash)."""
    tool = load_tool("benchmark")
    meta = MetadataCatalog.get("shapes_tiny_val")
    (row,) = tool.main(
        ["--register", f"shapes_tiny_val={meta.json_file}:{meta.image_root}",
         "--config-file", os.path.join(repo_root, "configs/MaskRCNN/MaskRCNN_R_50_1x.yaml"),
         "--weights", "-", "--no-eval", "--dataset", "shapes_tiny_val", "--device", "cpu",
         "--input-size", "64x96", "--iters", "1", "--warmup", "0", "--num-images", "1",
         "--output-dir", str(tmp_path), "--opts", "MODEL.WEIGHTS", ""]
    )  # fmt: skip
    assert "error" not in row, row
    assert row["dataset"] == "shapes_tiny_val"
    assert abs(row["params_M"] - 44.3) < 0.2  # R-50-FPN Mask R-CNN with 80 classes


def test_gflops_count_branches_whose_output_is_discarded():
    """An untrained model may drop a branch's output in post-processing: still counted."""
    import torch

    from instseg_d2.benchmark.runner import count_gflops

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 1, bias=False)  # 3*4 MACs per pixel
            self.b = torch.nn.Conv2d(4, 8, 1, bias=False)  # 4*8 MACs per pixel, then discarded

        def forward(self, inputs):
            x = self.a(inputs[0]["image"].float()[None])
            masks = self.b(x)
            if bool((masks.sum(dim=1) > 1e9).any()):  # nothing passes (an untrained model)
                return [{"sum": x.sum() + masks.sum()}]
            return [{"sum": x.sum()}]

    gflops = count_gflops(Model(), [{"image": torch.zeros(3, 10, 10)}])
    assert abs(gflops * 1e9 - (12 + 32) * 100) < 1e-6

    class VectorProducts(torch.nn.Module):  # fvcore's own matmul handle fails on 1-D operands
        def forward(self, inputs):
            x = inputs[0]["image"].float().flatten(1)  # (3, 100)
            w = torch.ones(100)
            return [{"sum": (x @ w).sum() + w @ w + (x.t() @ x).sum()}]

    gflops = count_gflops(VectorProducts(), [{"image": torch.zeros(3, 10, 10)}])
    assert abs(gflops * 1e9 - (3 * 100 + 100 + 100 * 100 * 3)) < 1e-6
