"""The one evaluator: every allowed detection is scored; boundary AP on hand-built masks."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.structures import Instances
from PIL import Image

from instseg_d2.data import register_coco_instances_checked
from instseg_d2.engine.evaluation import build_coco_evaluator, mask_boundary
from instseg_d2.plugins import get_full_cfg


def _register(folder, name, masks, size):
    """One image of ``size`` (h, w) whose ground truth is ``masks`` (class "thing")."""
    h, w = size
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(os.path.join(folder, "images", "a.png"))
    anns = []
    for i, m in enumerate(masks):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        bbox = [float(v) for v in mask_util.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": rle,
                     "area": float(m.sum()), "bbox": bbox, "iscrowd": 0})  # fmt: skip
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    json_file = os.path.join(folder, "gt.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    register_coco_instances_checked(name, json_file, os.path.join(folder, "images"), replace=True)


def _evaluate(name, pred_masks, size, tmp_path, **cfg_kv):
    cfg = get_full_cfg()
    cfg.MODEL.MASK_ON = True
    for k, v in cfg_kv.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, v)
    ev = build_coco_evaluator(cfg, name, str(tmp_path / "eval"))
    ev.reset()
    inst = Instances(size)
    inst.pred_masks = torch.as_tensor(np.stack(pred_masks))
    inst.scores = torch.linspace(1.0, 0.5, len(pred_masks))
    inst.pred_classes = torch.zeros(len(pred_masks), dtype=torch.long)
    ev.process([{"image_id": 1, "height": size[0], "width": size[1]}], [{"instances": inst}])
    return ev.evaluate()


def _grid_of_squares(n_rows, n_cols, cell=10, side=4):
    masks = []
    for r in range(n_rows):
        for c in range(n_cols):
            m = np.zeros((n_rows * cell, n_cols * cell), bool)
            m[r * cell : r * cell + side, c * cell : c * cell + side] = True
            masks.append(m)
    return masks


def test_500_perfect_predictions_score_100_with_the_cap_at_500(tmp_path):
    masks = _grid_of_squares(20, 25)  # 500 objects on one 200 x 250 image
    _register(str(tmp_path), "eval_500", masks, (200, 250))
    res = _evaluate("eval_500", masks, (200, 250), tmp_path, **{"TEST.DETECTIONS_PER_IMAGE": 500})
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    # detectron2's default evaluator would see only the first 100 of them
    res100 = _evaluate(
        "eval_500", masks, (200, 250), tmp_path, **{"TEST.DETECTIONS_PER_IMAGE": 100}
    )
    assert res100["segm"]["AP"] < 30


def _square(shift=0, size=64):
    m = np.zeros((size, size), bool)
    m[10:30, 10 + shift : 30 + shift] = True
    return m


def test_mask_boundary_is_the_inner_band_and_the_image_border():
    # 64 x 64 image: d = round(0.02 * 90.5) = 2; a 20 x 20 square keeps 20^2 - 16^2 pixels
    b = mask_boundary(_square())
    assert b.sum() == 400 - 256
    assert b[10:12, 10:30].all() and not b[12:28, 12:28].any()
    # a mask covering the whole image has its boundary along the image border
    full = mask_boundary(np.ones((64, 64), bool))
    assert full.sum() == 64 * 64 - 60 * 60


@pytest.mark.parametrize(
    "shift, segm_ap, boundary_ap",
    [
        (0, 100.0, 100.0),
        # shifted by 2 px: mask IoU 360 / 440 = 0.818 (thresholds 0.50..0.80 pass: AP 70);
        # boundary bands of 144 px overlap in 4 x 18 = 72 px: IoU 72 / 216 = 0.333 (none pass)
        (2, 70.0, 0.0),
    ],
)
def test_boundary_ap_on_hand_built_masks(tmp_path, shift, segm_ap, boundary_ap):
    _register(str(tmp_path), "eval_boundary", [_square()], (64, 64))
    res = _evaluate(
        "eval_boundary", [_square(shift)], (64, 64), tmp_path, **{"TEST.BOUNDARY_AP": True}
    )
    assert res["segm"]["AP"] == pytest.approx(segm_ap)
    assert res["boundary"]["AP"] == pytest.approx(boundary_ap)


@pytest.mark.parametrize(
    "old", ["MODEL.FCOS.POST_NMS_TOPK_TEST", "MODEL.SOLO.MAX_PER_IMG",
            "MODEL.SPARSE_INST.MAX_DETECTIONS"],
)  # fmt: skip
def test_method_detection_caps_point_to_the_one_key(old):
    cfg = get_full_cfg()
    with pytest.raises(KeyError, match="TEST.DETECTIONS_PER_IMAGE"):
        cfg.merge_from_list([old, "50"])
