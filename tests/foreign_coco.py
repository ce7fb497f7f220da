"""A COCO json "written by another tool": category id 0, crowd RLE, an image without
annotations, a grayscale image, polygons and compressed RLE side by side."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

H, W = 40, 60


def square_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def make_foreign_coco(folder: str) -> str:
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(os.path.join(folder, "images", "rgb.png"))
    gray = rng.integers(0, 255, (H, W), dtype=np.uint8)
    Image.fromarray(gray, mode="L").save(os.path.join(folder, "images", "gray.png"))
    Image.fromarray(rgb).save(os.path.join(folder, "images", "empty.jpg"))

    rle_mask = np.zeros((H, W), dtype=np.uint8)
    rle_mask[20:30, 30:50] = 1
    rle = mask_util.encode(np.asfortranarray(rle_mask))
    rle["counts"] = rle["counts"].decode("ascii")
    crowd = np.zeros((H, W), dtype=np.uint8)
    crowd[0:8, 0:8] = 1
    # uncompressed RLE (counts as a list), column-major, as COCO crowd annotations are
    flat = crowd.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    data = {
        "images": [
            {"id": 10, "file_name": "rgb.png", "height": H, "width": W},
            {"id": 11, "file_name": "gray.png", "height": H, "width": W},
            {"id": 12, "file_name": "empty.jpg", "height": H, "width": W},
        ],
        "categories": [{"id": 0, "name": "zero"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 0, "iscrowd": 0, "area": 100.0,
             "bbox": [5, 10, 10, 10], "segmentation": square_poly(5, 10, 15, 20)},
            {"id": 2, "image_id": 10, "category_id": 3, "iscrowd": 0, "area": 200.0,
             "bbox": [30, 20, 20, 10], "segmentation": rle},
            {"id": 3, "image_id": 10, "category_id": 3, "iscrowd": 1, "area": 64.0,
             "bbox": [0, 0, 8, 8], "segmentation": {"size": [H, W], "counts": counts}},
            {"id": 4, "image_id": 11, "category_id": 3, "iscrowd": 0, "area": 300.0,
             "bbox": [20, 5, 30, 10], "segmentation": square_poly(20, 5, 50, 15)},
        ],
    }  # fmt: skip
    path = os.path.join(folder, "annotations.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def oracle_evaluate(cfg, dataset_name: str, output_dir: str) -> dict:
    """COCO results of the project's evaluator on ``dataset_name`` with its own ground-truth
    masks (no boxes, score 1) as predictions: AP 100 when classes and ids are mapped right."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.structures import Instances

    from instseg_d2.engine import build_coco_evaluator

    evaluator = build_coco_evaluator(cfg, dataset_name, output_dir)
    evaluator.reset()
    for d in DatasetCatalog.get(dataset_name):
        annos = [a for a in d["annotations"] if not a.get("iscrowd")]
        size = (d["height"], d["width"])
        inst = Instances(size)
        masks = torch.zeros(0, *size, dtype=torch.bool)
        classes = torch.zeros(0, dtype=torch.int64)
        if annos:
            gt = utils.annotations_to_instances(annos, size, mask_format="bitmask")
            masks, classes = gt.gt_masks.tensor, gt.gt_classes
        inst.pred_masks = masks
        inst.pred_classes = classes
        inst.scores = torch.ones(len(classes))
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()
