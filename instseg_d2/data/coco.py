"""Register COCO-format instance datasets, with validation that names what is wrong."""

import json
import logging
import os
from typing import Dict, List, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

logger = logging.getLogger(__name__)


class DatasetFormatError(ValueError):
    """A COCO annotation file (or its images) is not usable; the message names the culprit."""


def read_coco_json(json_file: str) -> dict:
    """Read and parse a COCO json, with errors that name the file."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO annotation file not found: {json_file!r}")
    if os.path.getsize(json_file) == 0:
        raise DatasetFormatError(f"COCO annotation file {json_file!r} is empty")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"COCO annotation file {json_file!r} is not valid JSON: {e}")
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"COCO annotation file {json_file!r}: top level must be an object with 'images', "
            f"'annotations' and 'categories', got {type(data).__name__}"
        )
    return data


def validate_coco_dict(data: dict, json_file: str, image_root: str) -> None:
    """Check the structure COCOEvaluator and the loader rely on; raise DatasetFormatError.

    Checks: 'images' and 'categories' present and non-empty lists; unique image and category
    ids; every image has file_name/height/width and its file exists under ``image_root``;
    every annotation refers to a known image and category, has a 4-number bbox and a
    segmentation that is a list of polygons (>= 3 points each) or an RLE whose size matches
    its image.
    """
    where = f"COCO annotation file {json_file!r}"
    for key in ("images", "categories"):
        if key not in data:
            raise DatasetFormatError(f"{where}: missing key {key!r}")
        if not isinstance(data[key], list) or not data[key]:
            raise DatasetFormatError(f"{where}: {key!r} must be a non-empty list")
    anns = data.get("annotations", [])
    if not isinstance(anns, list):
        raise DatasetFormatError(f"{where}: 'annotations' must be a list")

    cat_ids = [c.get("id") for c in data["categories"]]
    for c in data["categories"]:
        if not isinstance(c.get("id"), int) or "name" not in c:
            raise DatasetFormatError(f"{where}: category {c} needs an integer 'id' and a 'name'")
    _check_unique(cat_ids, "category id", where)

    images = {}
    for im in data["images"]:
        for k in ("id", "file_name", "height", "width"):
            if k not in im:
                raise DatasetFormatError(f"{where}: image {im.get('id', im)} has no {k!r}")
        images[im["id"]] = im
    _check_unique([im["id"] for im in data["images"]], "image id", where)
    missing = [
        im["file_name"]
        for im in data["images"]
        if not os.path.isfile(os.path.join(image_root, im["file_name"]))
    ]
    if missing:
        raise DatasetFormatError(
            f"{where}: {len(missing)} image file(s) missing under {image_root!r}, e.g. "
            f"{os.path.join(image_root, missing[0])!r}"
        )

    known_cats = set(cat_ids)
    for a in anns:
        aid = a.get("id", "(no id)")
        if a.get("image_id") not in images:
            raise DatasetFormatError(
                f"{where}: annotation {aid} refers to unknown image_id {a.get('image_id')!r}"
            )
        if a.get("category_id") not in known_cats:
            raise DatasetFormatError(
                f"{where}: annotation {aid} has category_id {a.get('category_id')!r}, "
                f"not among the categories {sorted(known_cats)}"
            )
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4) or min(bbox[2:]) < 0:
            raise DatasetFormatError(
                f"{where}: annotation {aid} has bbox {bbox!r}; expected [x, y, w, h], w, h >= 0"
            )
        _check_segmentation(a, images[a["image_id"]], where)


def _check_unique(ids: List, what: str, where: str) -> None:
    seen = set()
    for i in ids:
        if i in seen:
            raise DatasetFormatError(f"{where}: duplicate {what} {i!r}")
        seen.add(i)


def _check_segmentation(anno: dict, image: dict, where: str) -> None:
    segm = anno.get("segmentation")
    aid = anno.get("id", "(no id)")
    if segm is None or segm == []:
        return  # allowed (box-only annotation); the mapper refuses it if masks are needed
    if isinstance(segm, dict):
        size = segm.get("size")
        if "counts" not in segm or not isinstance(size, list) or len(size) != 2:
            raise DatasetFormatError(f"{where}: annotation {aid}: RLE needs 'counts' and 'size'")
        if list(size) != [image["height"], image["width"]]:
            raise DatasetFormatError(
                f"{where}: annotation {aid}: RLE size {size} differs from its image "
                f"{image['file_name']!r} ({image['height']}x{image['width']})"
            )
        return
    if not isinstance(segm, list) or not all(isinstance(p, list) for p in segm):
        raise DatasetFormatError(
            f"{where}: annotation {aid}: segmentation must be a list of polygons or an RLE dict"
        )
    for poly in segm:
        if len(poly) % 2 != 0 or len(poly) < 6:
            raise DatasetFormatError(
                f"{where}: annotation {aid}: polygon with {len(poly)} coordinates "
                "(needs an even number, at least 6)"
            )


def category_metadata(data: dict) -> Dict:
    """thing_classes / id map exactly as detectron2's load_coco_json builds them."""
    cats = sorted(data["categories"], key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)},
    }


def register_coco_instances_checked(
    name: str, json_file: str, image_root: str, replace: bool = False
) -> None:
    """Validate a COCO json now, then register it as dataset ``name`` (classes from the json).

    The class names (sorted by category id, contiguous ids 0..K-1) are available from
    ``MetadataCatalog.get(name).thing_classes`` right away; the dicts load on first use.
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Image folder of dataset {name!r} not found: {image_root!r}")
    data = read_coco_json(json_file)
    validate_coco_dict(data, json_file, image_root)
    if name in DatasetCatalog.list():
        if not replace:
            raise ValueError(f"Dataset name {name!r} is already registered; choose another name")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
    )
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", **category_metadata(data)
    )


def parse_dataset_arg(spec: str) -> Tuple[str, str, str]:
    """Parse ``NAME=annotations.json:image_dir`` (the ``--dataset`` command-line option)."""
    name, sep, rest = spec.partition("=")
    json_file, sep2, image_root = rest.rpartition(":")
    if not (sep and sep2 and name and json_file and image_root):
        raise ValueError(
            f"--dataset {spec!r}: expected NAME=annotations.json:image_dir, "
            "e.g. --dataset mydata_train=data/train.json:data/images"
        )
    return name, json_file, image_root
