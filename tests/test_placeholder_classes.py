"""Categories without instances at registration: reported; a background placeholder (labelme's
``_background_``, id 0) dropped by default, so that class count, ids and evaluation are right."""

import json
import logging
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from foreign_coco import oracle_evaluate, square_poly
from instseg_d2.data import DatasetFormatError, register_coco_instances_checked
from instseg_d2.engine import build_config
from instseg_d2.engine.setup import default_argument_parser, register_datasets

H, W = 32, 48


def labelme_coco(folder, extra_categories=(), background_instances=False) -> str:
    """Two images, classes cell (id 1) and nucleus (id 2), plus labelme's empty
    ``_background_`` (id 0) and ``extra_categories``."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    images = []
    for i in range(2):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(f"{folder}/images/{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": H, "width": W})
    cats = [{"id": 0, "name": "_background_"}, {"id": 1, "name": "cell"},
            {"id": 2, "name": "nucleus"}] + list(extra_categories)  # fmt: skip
    boxes = [(1, 1, 2, 2, 12, 10), (1, 2, 20, 5, 30, 20), (2, 1, 5, 10, 25, 30)]  # image, cat, xyxy
    if background_instances:
        boxes.append((2, 0, 30, 2, 40, 10))
    anns = [
        {"id": k + 1, "image_id": img, "category_id": cat, "iscrowd": 0,
         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)),
         "segmentation": square_poly(x0, y0, x1, y1)}
        for k, (img, cat, x0, y0, x1, y1) in enumerate(boxes)
    ]  # fmt: skip
    path = os.path.join(folder, "train.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTSEG_CACHE", str(tmp_path / "cache"))


def test_background_placeholder_dropped(tmp_path, caplog):
    json_file = labelme_coco(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        register_coco_instances_checked("lm_train", json_file, str(tmp_path / "images"), True)
    assert "'_background_' (id 0)" in caplog.text and "dropped" in caplog.text
    meta = MetadataCatalog.get("lm_train")
    assert meta.thing_classes == ["cell", "nucleus"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}
    assert meta.source_json_file == json_file != meta.json_file
    with open(meta.json_file) as f:
        assert [c["id"] for c in json.load(f)["categories"]] == [1, 2]
    dicts = DatasetCatalog.get("lm_train")
    assert [[a["category_id"] for a in d["annotations"]] for d in dicts] == [[0, 1], [0]]

    cfg = build_config(opts=["DATASETS.TRAIN", "('lm_train',)", "DATASETS.TEST", "('lm_train',)",
                             "MODEL.MASK_ON", "True"])  # fmt: skip
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2  # not 3
    res = oracle_evaluate(cfg, "lm_train", str(tmp_path / "eval"))
    assert res["segm"]["AP"] == pytest.approx(100.0)  # ids mapped back right
    assert set(k for k in res["segm"] if k.startswith("AP-")) == {"AP-cell", "AP-nucleus"}


def test_keep_background_and_drop_empty(tmp_path, caplog):
    mitosis = {"id": 5, "name": "mitosis"}
    json_file = labelme_coco(str(tmp_path), extra_categories=[mitosis])
    root = str(tmp_path / "images")
    with caplog.at_level(logging.WARNING):
        register_coco_instances_checked("lm_default", json_file, root, True)
    assert MetadataCatalog.get("lm_default").thing_classes == ["cell", "nucleus", "mitosis"]
    assert "'mitosis' (id 5)" in caplog.text and "--drop-empty-classes" in caplog.text

    register_coco_instances_checked("lm_keep", json_file, root, True, keep_background=True)
    assert MetadataCatalog.get("lm_keep").thing_classes == [
        "_background_", "cell", "nucleus", "mitosis"]  # fmt: skip
    assert MetadataCatalog.get("lm_keep").json_file == json_file  # nothing dropped: the original

    register_coco_instances_checked("lm_drop", json_file, root, True, drop_empty=True)
    meta = MetadataCatalog.get("lm_drop")
    assert meta.thing_classes == ["cell", "nucleus"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1}


def test_background_with_instances_is_a_class(tmp_path, caplog):
    json_file = labelme_coco(str(tmp_path), background_instances=True)
    with caplog.at_level(logging.WARNING):
        register_coco_instances_checked("lm_bg", json_file, str(tmp_path / "images"), True)
    assert MetadataCatalog.get("lm_bg").thing_classes == ["_background_", "cell", "nucleus"]
    assert "named like a background placeholder but has 1 instances" in caplog.text


def test_no_class_left_refused(tmp_path):
    json_file = labelme_coco(str(tmp_path))
    with open(json_file) as f:
        data = json.load(f)
    data["annotations"] = []
    with open(json_file, "w") as f:
        json.dump(data, f)
    with pytest.raises(DatasetFormatError, match="no category has an instance"):
        register_coco_instances_checked(
            "lm_none", json_file, str(tmp_path / "images"), True, drop_empty=True
        )


def test_command_line_flags(tmp_path):
    json_file = labelme_coco(str(tmp_path))
    spec = f"lm_cli={json_file}:{tmp_path / 'images'}"
    args = default_argument_parser().parse_args(["--dataset", spec, "--keep-background-class"])
    register_datasets(args.dataset, keep_background=args.keep_background_class)
    assert MetadataCatalog.get("lm_cli").thing_classes[0] == "_background_"
    DatasetCatalog.remove("lm_cli")
    MetadataCatalog.remove("lm_cli")
    register_datasets([spec])
    assert MetadataCatalog.get("lm_cli").thing_classes == ["cell", "nucleus"]
