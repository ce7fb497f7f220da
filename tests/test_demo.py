"""tools/demo.py (library: instseg_d2.demo): every method from a config and a checkpoint alone,
overlays and COCO-style json for images and a video."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from PIL import Image

from instseg_d2.data.shapes import SHAPES_CLASSES, ShapesSpec, render_image
from instseg_d2.engine import ClassCountError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(f"{REPO}/configs/*/shapes_*.yaml"))
RECORD_KEYS = {"image_id", "category_id", "category_name", "bbox", "score"}


@pytest.fixture(scope="module")
def png(tmp_path_factory):
    """A 96x128 shapes image as a PNG file."""
    image, _ = render_image(np.random.default_rng([101, 0]), ShapesSpec(1, 101))
    path = str(tmp_path_factory.mktemp("inputs") / "shapes.png")
    Image.fromarray(image[:96]).save(path)
    return path


def run_demo(load_tool, config, args):
    return load_tool("demo").main(["--config-file", os.path.join(REPO, config)] + args)


def check_records(path, threshold=0.5, masks=True):
    with open(path) as f:
        records = json.load(f)
    assert isinstance(records, list)
    for r in records:
        assert RECORD_KEYS <= set(r) and r["score"] >= threshold and len(r["bbox"]) == 4
        assert r["category_name"] == SHAPES_CLASSES[r["category_id"]]
        assert ("segmentation" in r) == masks
    return records


def test_twelve_shapes_configs():
    assert len(CONFIGS) == 12


@pytest.mark.parametrize("config", CONFIGS)
def test_demo_writes_overlay_and_json(config, png, shapes_checkpoint, load_tool, tmp_path):
    """The command line of the issue, no --dataset: the classes come from the checkpoint."""
    out = tmp_path / "out"
    weights = shapes_checkpoint(config)
    assert run_demo(load_tool, config, ["--input", png, "--output", str(out),
                                        "--opts", "MODEL.WEIGHTS", weights]) == 0  # fmt: skip
    overlay = np.asarray(Image.open(out / "shapes.png"))
    assert overlay.shape == (96, 128, 3)
    check_records(out / "shapes.json", masks="FCOS" not in config)


@pytest.mark.parametrize(
    "config, opts",
    [
        ("configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml", []),
        ("configs/FCOS/shapes_FCOS_R_18.yaml", ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0"]),
    ],
)
def test_demo_draws_every_detection(config, opts, png, shapes_checkpoint, load_tool, tmp_path):
    """Threshold 0: every detection of the model is listed (masks as RLE of the image's
    size; FCOS, a box detector, without) and drawn; the config's datasets do not exist."""
    import pycocotools.mask as mask_util

    from instseg_d2.demo import Predictor
    from instseg_d2.engine import build_inference_model

    weights = shapes_checkpoint(config)
    opts = [
        "MODEL.WEIGHTS",
        weights,
        "DATASETS.TRAIN",
        "('nowhere',)",
        "DATASETS.TEST",
        "()",
    ] + opts
    out = tmp_path / "out"
    run_demo(load_tool, config, ["--input", os.path.dirname(png), "--output", str(out),
                                 "--confidence-threshold", "0", "--opts"] + opts)  # fmt: skip
    masks = "FCOS" not in config
    records = check_records(out / "shapes.json", threshold=0.0, masks=masks)
    cfg, model, classes = build_inference_model(os.path.join(REPO, config), opts)
    image = np.asarray(Image.open(png))[:, :, ::-1]
    expected = Predictor(cfg, model)(image)
    assert len(records) == len(expected) > 0 and classes == list(SHAPES_CLASSES)
    if masks:
        decoded = mask_util.decode([r["segmentation"] for r in records])
        assert decoded.shape == (96, 128, len(records))
        assert np.array_equal(decoded.transpose(2, 0, 1), expected.pred_masks.numpy())
    overlay = np.asarray(Image.open(out / "shapes.png")).astype(int)
    assert np.abs(overlay - image[:, :, ::-1]).mean() > 1  # something was drawn


def test_demo_video(png, shapes_checkpoint, load_tool, tmp_path):
    cv2 = pytest.importorskip("cv2")
    config = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"
    frame = np.asarray(Image.open(png))[:, :, ::-1]
    video = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 96))
    for k in range(3):
        writer.write(np.ascontiguousarray(np.roll(frame, 8 * k, axis=1)))
    writer.release()
    out = tmp_path / "out"
    run_demo(load_tool, config, ["--video-input", video, "--output", str(out),
                                 "--confidence-threshold", "0.2",
                                 "--opts", "MODEL.WEIGHTS", shapes_checkpoint(config)])  # fmt: skip
    records = check_records(out / "clip.json", threshold=0.2)
    assert {r["image_id"] for r in records} <= {0, 1, 2}
    result = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = []
    while True:
        ok, f = result.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 3 and frames[0].shape == (96, 128, 3)


def test_classes_needed(png, shapes_checkpoint, load_tool, tmp_path, tiny_shapes):
    """A checkpoint without recorded classes: an error that says what to pass, unless the
    config's datasets are registered or --dataset names the training set."""
    config = "configs/SOLO/shapes_SOLOv2_R_18.yaml"
    ckpt = torch.load(shapes_checkpoint(config), weights_only=False)
    del ckpt["instseg_meta"]
    bare = str(tmp_path / "bare.pth")
    torch.save(ckpt, bare)
    unregistered = ["DATASETS.TRAIN", "('nowhere',)", "DATASETS.TEST", "()"]
    args = ["--input", png, "--output", str(tmp_path / "out"), "--opts", "MODEL.WEIGHTS", bare]
    with pytest.raises(ClassCountError, match="records none.*--dataset"):
        run_demo(load_tool, config, args + unregistered)
    d = DatasetCatalog.get("shapes_tiny_train")
    json_file = os.path.join(
        os.path.dirname(os.path.dirname(d[0]["file_name"])), "annotations.json"
    )
    image_dir = os.path.dirname(d[0]["file_name"])
    spec = f"demo_train={json_file}:{image_dir}"
    assert run_demo(load_tool, config, ["--dataset", spec] + args + unregistered) == 0
    assert (tmp_path / "out" / "shapes.json").is_file()
