"""Export (instseg_d2.export, tools/export.py): the traced program of every method, post-processing
included, equals the eager model on two images of other sizes and detection counts."""

import numpy as np
import pytest
import torch

from instseg_d2.data.shapes import ShapesSpec, render_image
from instseg_d2.engine import Trainer, build_config
from instseg_d2.export import (
    ExportError,
    check_exported,
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_runner,
    trace,
)
from shapes_configs import TRANSFINER_THREE_LEVELS

# Untrained models (seed 0) score almost every candidate alike; these test thresholds keep some
# detections, a different number on each image and below every cap, so that the exported
# program must compute the count (and the Transfiner refines a few nodes of every level).
CASES = {
    "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.36"],
    "configs/FCOS/shapes_FCOS_R_18.yaml": ["MODEL.FCOS.INFERENCE_TH_TEST", "0.013"],
    "configs/CondInst/shapes_CondInst_R_18.yaml": ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0064"],
    "configs/BlendMask/shapes_BlendMask_R_18.yaml": ["MODEL.FCOS.INFERENCE_TH_TEST", "0.007"],
    "configs/SOLO/shapes_SOLO_R_18.yaml": ["MODEL.SOLO.SCORE_THR", "0.005",
                                           "MODEL.SOLO.UPDATE_THR", "0.0065"],
    "configs/SOLO/shapes_DecoupledSOLO_R_18.yaml": ["MODEL.SOLO.SCORE_THR", "0.005",
                                                    "MODEL.SOLO.MASK_THR", "0.001",
                                                    "MODEL.SOLO.UPDATE_THR", "0.0006"],
    "configs/SOLO/shapes_SOLOv2_R_18.yaml": ["MODEL.SOLO.SCORE_THR", "0.005",
                                             "MODEL.SOLO.UPDATE_THR", "0.009"],
    "configs/SparseInst/shapes_SparseInst_GIAM_R_18.yaml": ["MODEL.SPARSE_INST.CLS_THRESHOLD", "0.104"],
    "configs/Transfiner/shapes_Transfiner_R_18.yaml": [
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.38", "MODEL.TRANSFINER.TEST_CHUNK_SIZE", "64",
        "MODEL.TRANSFINER.TEST_INCOHERENT_THRESH", "(0.509, 0.511, 0.512)",
        *TRANSFINER_THREE_LEVELS,
    ],
    "configs/DVIS/shapes_DVIS_R_18.yaml": [
        "MODEL.DVIS.VERIFY.SCORE_THRESH", "0.0", "MODEL.DVIS.MEANSHIFT.FG_THRESH", "0.01",
        "MODEL.DVIS.MEANSHIFT.BANDWIDTHS", "(0.01, 0.005)", "MODEL.DVIS.MEANSHIFT.MIN_AREA",
        "(1, 1)", "MODEL.DVIS.MEANSHIFT.MAX_VALUE", "1.0",
    ],
    "configs/MaskLab/shapes_MaskLab_R_18.yaml": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.36"],
    "configs/SemiConv/shapes_SemiConv_R_18.yaml": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.36"],
}  # fmt: skip


@pytest.fixture(scope="module")
def images():
    """A 96x128 and a 128x96 crop of one shapes image (BGR, uint8, CHW)."""
    image, _ = render_image(np.random.default_rng([101, 0]), ShapesSpec(1, 101))
    image = torch.as_tensor(image[:, :, ::-1].copy()).permute(2, 0, 1)
    return [image[:, :96, :128].contiguous(), image[:, :128, :96].contiguous()]


def untrained(repo_root, config, opts=()):
    cfg = build_config(f"{repo_root}/{config}", ["MODEL.DEVICE", "cpu"] + list(opts))
    torch.manual_seed(0)
    return Trainer.build_model(cfg).eval()


@pytest.mark.parametrize("config", list(CASES))
def test_exported_equals_eager(config, images, repo_root, tmp_path):
    model = untrained(repo_root, config, CASES[config])
    path = str(tmp_path / "model.ts")
    fields = export_torchscript(model, images[0], path, {"config": config})
    exported, info = load_torchscript(path)
    assert info == {"config": config, "outputs": list(fields)}
    masks = "FCOS" not in config  # FCOS is a box detector
    assert fields == ("pred_boxes", "scores", "pred_classes") + (("pred_masks",) * masks)

    report = check_exported(model, exported, fields, images)
    assert all(r[f] for r in report for f in fields), report
    counts = [r["detections"] for r in report]
    assert min(counts) > 0 and counts[0] != counts[1], counts  # the count is computed
    with torch.no_grad():
        out = exported(images[1])
    assert out[0].shape == (counts[1], 4)
    if masks:
        assert out[-1].shape == (counts[1], 128, 96) and out[-1].dtype == torch.bool


def test_export_needs_a_detection(images, repo_root):
    model = untrained(repo_root, "configs/FCOS/shapes_FCOS_R_18.yaml",
                      ["MODEL.FCOS.INFERENCE_TH_TEST", "1.0"])  # fmt: skip
    with pytest.raises(ExportError, match="gives no detection"):
        trace(model, images[0])
    with pytest.raises(ValueError, match="eval mode"):
        trace(model.train(), images[0])


def test_scripted_top_candidates_follow_the_count():
    """FCOS's top-k of a level's candidates: traced where the count is below k, it still
    keeps only k where it is above (the branch is scripted, not recorded)."""
    from instseg_d2.modeling.fcos.inference import top_candidates

    traced = torch.jit.trace(lambda s: top_candidates(s, 3)[0].sort().values, torch.rand(2))
    assert torch.equal(traced(torch.tensor([0.5, 0.1])), torch.tensor([0.1, 0.5]))
    assert torch.equal(
        traced(torch.tensor([0.2, 0.9, 0.4, 0.7, 0.1])), torch.tensor([0.4, 0.7, 0.9])
    )


def test_export_tool(tmp_path, repo_root, load_tool, images):
    """tools/export.py: checkpoint-free (random weights), sample images given as files."""
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image.permute(1, 2, 0).numpy()[:, :, ::-1]).save(paths[-1])
    out = str(tmp_path / "fcos.ts")
    argv = ["--config-file", f"{repo_root}/configs/FCOS/shapes_FCOS_R_18.yaml", "--output", out,
            "--sample-image", paths[0], "--sample-image", paths[1], "--opts", "MODEL.WEIGHTS", "",
            "INPUT.MIN_SIZE_TEST", "0"] + CASES["configs/FCOS/shapes_FCOS_R_18.yaml"]  # fmt: skip
    torch.manual_seed(0)
    assert load_tool("export").main(argv) == 0
    module, info = load_torchscript(out)
    assert info["thing_classes"] == ["circle", "square", "triangle", "star", "cross"]
    assert info["outputs"] == ["pred_boxes", "scores", "pred_classes"]
    assert info["input_format"] == "BGR" and info["min_size_test"] == 0
    assert module(images[1])[0].shape[1] == 4


def test_onnx(images, repo_root, tmp_path):
    """ONNX where it works (FCOS: equal to eager with onnxruntime), and the exporter's reason
    where it does not (SOLO: stable sort)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    config = "configs/FCOS/shapes_FCOS_R_18.yaml"
    model = untrained(repo_root, config, CASES[config])
    fields = export_onnx(model, images[0], str(tmp_path / "fcos.onnx"))
    report = check_exported(model, onnx_runner(str(tmp_path / "fcos.onnx")), fields, images)
    assert all(r[f] for r in report for f in fields), report
    config = "configs/SOLO/shapes_SOLOv2_R_18.yaml"
    model = untrained(repo_root, config, CASES[config])
    with pytest.raises(ExportError, match="ONNX export failed.*Sort"):
        export_onnx(model, images[0], str(tmp_path / "solo.onnx"))
