"""COCO json from other tools: used correctly, or refused with a message naming the culprit."""

import json
import os
import shutil

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks

from foreign_coco import H, W, make_foreign_coco, oracle_evaluate
from instseg_d2.data import (
    DatasetFormatError,
    InstanceDatasetMapper,
    parse_dataset_arg,
    register_coco_instances_checked,
)
from instseg_d2.engine import build_config


@pytest.fixture
def foreign(tmp_path):
    path = make_foreign_coco(str(tmp_path))
    return path, str(tmp_path / "images")


def _rewrite(path, fn):
    with open(path) as f:
        data = json.load(f)
    fn(data)
    with open(path, "w") as f:
        json.dump(data, f)


def test_foreign_json_is_used_correctly(foreign):
    json_file, image_root = foreign
    register_coco_instances_checked("foreign_ok", json_file, image_root, replace=True)
    meta = MetadataCatalog.get("foreign_ok")
    assert meta.thing_classes == ["zero", "three"]
    assert meta.thing_dataset_id_to_contiguous_id == {0: 0, 3: 1}
    dicts = DatasetCatalog.get("foreign_ok")
    assert [os.path.basename(d["file_name"]) for d in dicts] == ["rgb.png", "gray.png", "empty.jpg"]
    assert [len(d["annotations"]) for d in dicts] == [3, 1, 0]

    cfg = build_config(opts=["DATASETS.TRAIN", "('foreign_ok',)", "DATASETS.TEST", "()",
                             "INPUT.MIN_SIZE_TRAIN", f"({H},)", "INPUT.RANDOM_FLIP", "none"])  # fmt: skip
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2  # from the dataset
    mapper = InstanceDatasetMapper(cfg, is_train=True)
    out = mapper(dicts[0])
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1]  # crowd dropped; ids 0 and 3 -> 0 and 1
    assert isinstance(inst.gt_masks, BitMasks)  # RLE present -> bitmasks for the image
    assert inst.gt_masks.tensor[1, 20:30, 30:50].all() and inst.gt_masks.tensor[1].sum() == 200
    gray = mapper(dicts[1])
    assert gray["image"].shape == (3, H, W)  # grayscale -> 3 channels, all equal
    assert torch.equal(gray["image"][0], gray["image"][1])


def test_oracle_predictions_score_100(foreign, tmp_path):
    """COCOEvaluator on the foreign set: GT masks as predictions (no boxes) give AP 100,
    so category id 0, the crowd region and the empty image are handled."""
    json_file, image_root = foreign
    register_coco_instances_checked("foreign_eval", json_file, image_root, replace=True)
    cfg = build_config(opts=["DATASETS.TRAIN", "('foreign_eval',)", "MODEL.MASK_ON", "True"])
    res = oracle_evaluate(cfg, "foreign_eval", str(tmp_path / "eval"))
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["bbox"]["AP"] == pytest.approx(100.0)  # boxes derived from the masks


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("categories"), "missing key 'categories'"),
        (lambda d: d.update(categories=[]), "'categories' must be a non-empty list"),
        (lambda d: d["annotations"][0].update(category_id=7), "annotation 1 has category_id 7"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation 1 refers to unknown"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "annotation 1 has bbox"),
        (
            lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4]]),
            "annotation 1: polygon",
        ),
        (lambda d: d["annotations"][1]["segmentation"].update(size=[5, 5]), "RLE size"),
        (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id 10"),
        (lambda d: d["images"][0].pop("height"), "has no 'height'"),
    ],
)
def test_malformed_json_refused(foreign, mutate, match):
    json_file, image_root = foreign
    _rewrite(json_file, mutate)
    with pytest.raises(DatasetFormatError, match=match) as e:
        register_coco_instances_checked("foreign_bad", json_file, image_root, replace=True)
    assert json_file in str(e.value)
    assert "foreign_bad" not in DatasetCatalog.list()


def test_missing_empty_and_invalid_files(foreign):
    json_file, image_root = foreign
    os.remove(os.path.join(image_root, "gray.png"))
    with pytest.raises(DatasetFormatError, match="gray.png"):
        register_coco_instances_checked("foreign_missing", json_file, image_root)
    open(json_file, "w").close()
    with pytest.raises(DatasetFormatError, match="is empty"):
        register_coco_instances_checked("foreign_empty", json_file, image_root)
    with open(json_file, "w") as f:
        f.write('{"images": [')
    with pytest.raises(DatasetFormatError, match="not valid JSON") as e:
        register_coco_instances_checked("foreign_trunc", json_file, image_root)
    assert json_file in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        register_coco_instances_checked("foreign_nofile", json_file + ".nope.json", image_root)


def test_corrupt_image_named(foreign):
    json_file, image_root = foreign
    register_coco_instances_checked("foreign_corrupt", json_file, image_root, replace=True)
    with open(os.path.join(image_root, "rgb.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really a png")
    cfg = build_config(opts=["DATASETS.TRAIN", "('foreign_corrupt',)"])
    d = DatasetCatalog.get("foreign_corrupt")[0]
    for is_train in (True, False):
        with pytest.raises(ValueError, match="Cannot read image .*rgb.png"):
            InstanceDatasetMapper(cfg, is_train=is_train)(d)


def test_duplicate_name_and_dataset_arg(foreign):
    json_file, image_root = foreign
    register_coco_instances_checked("foreign_dup", json_file, image_root, replace=True)
    with pytest.raises(ValueError, match="already registered"):
        register_coco_instances_checked("foreign_dup", json_file, image_root)
    assert parse_dataset_arg("a=/x/y.json:/x/imgs") == ("a", "/x/y.json", "/x/imgs")
    for bad in ("a", "a=b.json", "=b.json:c", "a=:c"):
        with pytest.raises(ValueError, match="NAME=annotations.json:image_dir"):
            parse_dataset_arg(bad)


def test_coco_subset_tool(foreign, tmp_path, load_tool):
    tool = load_tool("coco_subset")
    json_file = foreign[0]
    with open(json_file) as f:
        coco = json.load(f)
    first = min(im["id"] for im in coco["images"])
    out = tmp_path / "sub.json"
    tool.main([json_file, str(out), "--num-images", "1"])
    sub = json.loads(out.read_text())
    assert [im["id"] for im in sub["images"]] == [first]
    assert sub["annotations"] == [a for a in coco["annotations"] if a["image_id"] == first]
    assert sub["categories"] == coco["categories"]
    with pytest.raises(ValueError, match="num-images"):
        tool.subset(coco, 0)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json"):
        tool.main([str(tmp_path / "bad.json"), str(out), "--num-images", "1"])
