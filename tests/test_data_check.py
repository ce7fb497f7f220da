"""The early data check of train_net.py (before the first iteration) and tools/check_dataset.py."""

import json
import os
import shutil

import pytest

from foreign_coco import make_foreign_coco
from instseg_d2.data import DatasetFormatError, register_coco_instances_checked
from instseg_d2.data.check import check_images, dataset_image_records
from instseg_d2.testing import TINY_OPTS

MASK_RCNN = "configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml"


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.fixture
def bad_val(tiny_shapes, tmp_path):
    """A copy of the tiny validation split (registered as ``bad_val``) whose third image is
    truncated; returns (json file, image folder, truncated file)."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(tiny_shapes[1])
    root = str(tmp_path / "images")
    shutil.copytree(meta.image_root, root)
    json_file = str(tmp_path / "val.json")
    shutil.copy(meta.json_file, json_file)
    with open(json_file) as f:
        name = json.load(f)["images"][2]["file_name"]
    _truncate(os.path.join(root, name))
    return json_file, root, os.path.join(root, name)


def test_truncated_validation_image_fails_before_training(
    bad_val, tmp_path, repo_root, monkeypatch
):
    import train_net

    json_file, root, truncated = bad_val
    # the check runs before the model is built: building a Trainer would fail this test
    monkeypatch.setattr(train_net, "Trainer", None)
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", os.path.join(repo_root, MASK_RCNN), "--dataset",
         f"bad_val={json_file}:{root}"]
        + list(TINY_OPTS) + ["DATASETS.TEST", "('bad_val',)", "OUTPUT_DIR", str(tmp_path / "o")]
    )  # fmt: skip
    with pytest.raises(DatasetFormatError) as e:
        train_net.main(args)
    msg = str(e.value)
    assert truncated in msg and "truncated" in msg and "'bad_val'" in msg
    assert "1 bad image" in msg  # only that one: the training set and other images are fine


def test_size_mismatch_names_file_and_sizes(bad_val):
    from PIL import Image

    json_file, root, _ = bad_val
    with open(json_file) as f:
        first = json.load(f)["images"][0]
    h, w = first["height"], first["width"]
    path = os.path.join(root, first["file_name"])
    Image.new("RGB", (w, h - 3)).save(path)  # 3 rows fewer than the json says
    register_coco_instances_checked("size_val", json_file, root, replace=True)
    problems = check_images(dataset_image_records("size_val"))
    assert (
        problems[0] == f"{path}: image is {h - 3}x{w} (height x width), its annotations say {h}x{w}"
    )
    assert len(problems) == 2 and "truncated" in problems[1]


def test_header_mode_none_mode_and_workers(bad_val, tiny_shapes):
    from instseg_d2.engine import build_config
    from instseg_d2.engine.setup import check_data

    json_file, root, truncated = bad_val
    register_coco_instances_checked("bad_val2", json_file, root, replace=True)
    records = dataset_image_records("bad_val2")
    assert check_images(records, full=False) == []  # the header of a truncated file is fine
    # > 64 records: checked by 2 worker processes, with the same findings
    found = check_images(records * 12, full=True, workers=2)
    assert len(found) == 12 and all(p.startswith(f"{truncated}: cannot be decoded") for p in found)
    opts = ["DATASETS.TRAIN", f"('{tiny_shapes[0]}',)", "DATASETS.TEST", "('bad_val2',)"]
    check_data(build_config(opts=opts + ["DATASETS.IMAGE_CHECK", "none"]))  # skipped
    check_data(build_config(opts=opts + ["DATASETS.IMAGE_CHECK", "header"]))
    with pytest.raises(DatasetFormatError, match="truncated"):
        check_data(build_config(opts=opts))


def test_check_dataset_tool(tmp_path, load_tool, capsys):
    tool = load_tool("check_dataset")
    json_file = make_foreign_coco(str(tmp_path))
    spec = f"foreign_tool={json_file}:{tmp_path / 'images'}"
    assert tool.main([spec]) == 0
    out = capsys.readouterr().out
    for line in [
        "images: 3",
        "instances: 3 in 2 classes",
        "crowd regions: 1",
        "images without annotations: 1",
        "size mismatches: 0",
        "unreadable images: 0",
    ]:
        assert line in out.splitlines(), out  # fmt: skip
    assert [ln.split() for ln in out.splitlines() if ln.startswith("  ")] == [
        ["zero", "1"], ["three", "2"]]  # fmt: skip

    _truncate(str(tmp_path / "images" / "gray.png"))
    assert tool.main([spec, "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "unreadable images: 1" in out and "gray.png: cannot be decoded" in out


def test_exif_rotated_image_has_turned_size(tmp_path):
    """A JPEG stored 30 wide x 20 high with EXIF orientation 6 (turn by 90 degrees) is read
    20 wide x 30 high by the mapper, so that is the size its annotations must say."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    path = str(tmp_path / "turned.jpg")
    Image.new("RGB", (30, 20)).save(path, exif=exif.tobytes())
    for full in (True, False):
        assert check_images([(path, 30, 20)], full=full) == []
        assert check_images([(path, 20, 30)], full=full) == [
            f"{path}: image is 30x20 (height x width), its annotations say 20x30"
        ]
