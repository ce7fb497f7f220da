"""The shared mapper on known images."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.structures import BitMasks, PolygonMasks

from foreign_coco import H, W, make_foreign_coco
from instseg_d2.data import InstanceDatasetMapper, register_coco_instances_checked
from instseg_d2.engine import build_config


@pytest.fixture
def dicts(tmp_path):
    json_file = make_foreign_coco(str(tmp_path))
    register_coco_instances_checked(
        "mapper_known", json_file, str(tmp_path / "images"), replace=True
    )
    return DatasetCatalog.get("mapper_known")


def _cfg(*opts):
    base = ["DATASETS.TRAIN", "('mapper_known',)", "DATASETS.TEST", "()", "MODEL.MASK_ON", "True",
            "INPUT.MIN_SIZE_TRAIN", f"({2 * H},)", "INPUT.MAX_SIZE_TRAIN", "1000",
            "INPUT.RANDOM_FLIP", "none", "INPUT.MASK_FORMAT", "polygon"]  # fmt: skip
    return build_config(opts=base + list(opts))


def test_known_image_train_output(dicts):
    """gray.png (40x60) with one polygon square (20,5)-(50,15), resized x2."""
    out = InstanceDatasetMapper(_cfg(), is_train=True)(dicts[1])
    assert out["image"].shape == (3, 2 * H, 2 * W) and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"]) == (H, W)
    inst = out["instances"]
    assert inst.image_size == (2 * H, 2 * W)
    assert inst.gt_classes.tolist() == [1]  # category id 3 -> contiguous 1
    assert inst.gt_boxes.tensor.tolist() == [[40.0, 10.0, 100.0, 30.0]]
    assert isinstance(inst.gt_masks, PolygonMasks)  # polygon format kept (no RLE here)
    raster = BitMasks.from_polygon_masks(inst.gt_masks, 2 * H, 2 * W).tensor[0]
    expected = torch.zeros(2 * H, 2 * W, dtype=torch.bool)
    expected[10:30, 40:100] = True
    assert (raster ^ expected).sum() <= 2 * (20 + 60)  # equal up to the polygon's edge pixels
    assert raster[12:28, 42:98].all() and not raster[:8].any()


def test_known_image_test_output(dicts):
    cfg = _cfg("INPUT.MIN_SIZE_TEST", str(H // 2), "INPUT.MAX_SIZE_TEST", "1000")
    out = InstanceDatasetMapper(cfg, is_train=False)(dicts[0])
    assert out["image"].shape == (3, H // 2, W // 2)
    assert "instances" not in out and "annotations" not in out
    assert out["image_id"] == 10


def test_flip_moves_boxes(dicts):
    cfg = _cfg("INPUT.RANDOM_FLIP", "horizontal", "INPUT.MIN_SIZE_TRAIN", f"({H},)")
    mapper = InstanceDatasetMapper(cfg, is_train=True)
    seen = set()
    for seed in range(20):
        np.random.seed(seed)
        seen.add(tuple(mapper(dicts[1])["instances"].gt_boxes.tensor[0].tolist()))
    assert seen == {(20.0, 5.0, 50.0, 15.0), (10.0, 5.0, 40.0, 15.0)}


def test_instance_aware_crop_keeps_an_instance(dicts):
    crop = ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.TYPE", "absolute",
            "INPUT.CROP.SIZE", "[16, 16]", "INPUT.MIN_SIZE_TRAIN", "(16,)"]  # fmt: skip
    aware = InstanceDatasetMapper(_cfg(*crop), is_train=True)
    plain = InstanceDatasetMapper(_cfg(*crop, "INPUT.CROP.CROP_INSTANCE", "False"), is_train=True)
    kept_aware = kept_plain = 0
    for seed in range(40):
        np.random.seed(seed)
        inst = aware(dicts[0])["instances"]
        kept_aware += len(inst) > 0
        if len(inst):  # boxes recomputed from the cropped masks, inside the window
            b = inst.gt_boxes.tensor
            assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 16).all()
        np.random.seed(seed)
        kept_plain += len(plain(dicts[0])["instances"]) > 0
    assert kept_aware == 40 and kept_plain < 40


def test_annotation_without_mask_refused_when_masks_needed(dicts):
    d = dict(dicts[1], annotations=[dict(dicts[1]["annotations"][0])])
    d["annotations"][0].pop("segmentation")
    with pytest.raises(ValueError, match="gray.png.*annotation 4 has no 'segmentation'"):
        InstanceDatasetMapper(_cfg(), is_train=True)(d)
    out = InstanceDatasetMapper(_cfg("MODEL.MASK_ON", "False"), is_train=True)(d)
    assert len(out["instances"]) == 1 and not out["instances"].has("gt_masks")
