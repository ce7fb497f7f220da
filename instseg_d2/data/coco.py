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


def is_placeholder_name(name: str) -> bool:
    """True for category names of a background placeholder: ``_background_`` (labelme's COCO
    export), ``__background__``, ``background`` (any case)."""
    return name.strip("_ ").lower() == "background"


def category_instance_counts(data: dict) -> Dict[int, int]:
    """Number of annotations (crowd included) of every category id of a COCO dict."""
    counts = {c["id"]: 0 for c in data["categories"]}
    for a in data.get("annotations", []):
        counts[a["category_id"]] += 1
    return counts


def placeholder_categories(
    data: dict, where: str, keep_background: bool = False, drop_empty: bool = False
) -> List[dict]:
    """The categories to drop from the class list, with a warning for every category that
    has no instance or is named like a placeholder (``where`` names the dataset).

    Dropped: categories without instances that are named like a background placeholder
    (unless ``keep_background``), or any category without instances with ``drop_empty``.
    """
    counts = category_instance_counts(data)
    drop, kept_empty = [], []
    for c in data["categories"]:
        n, placeholder = counts[c["id"]], is_placeholder_name(c["name"])
        if n == 0 and (drop_empty or (placeholder and not keep_background)):
            drop.append(c)
        elif n == 0:
            kept_empty.append(c)
        elif placeholder:
            logger.warning(
                "%s: category %r (id %s) is named like a background placeholder but has %d "
                "instances: kept as a class",
                where, c["name"], c["id"], n,
            )  # fmt: skip
    if drop:
        logger.warning(
            "%s: dropped %d categor%s without instances from the class list: %s. %s",
            where, len(drop), "y" if len(drop) == 1 else "ies", _names(drop),
            "" if drop_empty else f"Keep {'it' if len(drop) == 1 else 'them'} with "
            "--keep-background-class (keep_background=True).",
        )  # fmt: skip
    if kept_empty:
        logger.warning(
            "%s: %d categor%s without instances, kept as classes that this set cannot teach "
            "or evaluate: %s. Drop them with --drop-empty-classes (drop_empty=True).",
            where, len(kept_empty), "y" if len(kept_empty) == 1 else "ies", _names(kept_empty),
        )  # fmt: skip
    if len(drop) == len(data["categories"]):
        raise DatasetFormatError(f"{where}: no category has an instance; no class is left")
    return drop


def _names(categories: List[dict]) -> str:
    return ", ".join(f"{c['name']!r} (id {c['id']})" for c in categories)


def _without_categories(data: dict, drop: List[dict], json_file: str, name: str) -> str:
    """Write ``data`` without the categories ``drop`` (none of which has an annotation) to the
    cache folder; return its path. Loader and COCOEvaluator both read this file, so the class
    list, the contiguous ids and the evaluation agree."""
    import hashlib

    from .shapes import cache_root

    dropped = sorted(c["id"] for c in drop)
    stat = os.stat(json_file)
    key = f"{json_file}:{stat.st_mtime_ns}:{stat.st_size}:{dropped}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    out = os.path.join(cache_root(), "coco", f"{name}_{digest}.json")
    if not os.path.isfile(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        kept = dict(data, categories=[c for c in data["categories"] if c["id"] not in dropped])
        tmp = f"{out}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(kept, f)
        os.replace(tmp, out)
    return out


def register_coco_instances_checked(
    name: str,
    json_file: str,
    image_root: str,
    replace: bool = False,
    keep_background: bool = False,
    drop_empty: bool = False,
) -> None:
    """Validate a COCO json now, then register it as dataset ``name`` (classes from the json).

    The class names (sorted by category id, contiguous ids 0..K-1) are available from
    ``MetadataCatalog.get(name).thing_classes`` right away; the dicts load on first use.
    Categories without instances are reported; those named like a background placeholder
    (e.g. labelme's ``_background_``) are dropped from the class list unless
    ``keep_background``, and with ``drop_empty`` every category without instances is (see
    :func:`placeholder_categories`). The loader and the evaluator then read a copy of the json
    without them (``metadata.json_file``; ``metadata.source_json_file`` is the original).
    """
    json_file, image_root = os.path.abspath(json_file), os.path.abspath(image_root)
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Image folder of dataset {name!r} not found: {image_root!r}")
    data = read_coco_json(json_file)
    validate_coco_dict(data, json_file, image_root)
    where = f"Dataset {name!r} ({json_file})"
    drop = placeholder_categories(data, where, keep_background, drop_empty)
    source_json = json_file
    if drop:
        json_file = _without_categories(data, drop, json_file, name)
        data = dict(data, categories=[c for c in data["categories"] if c not in drop])
    if name in DatasetCatalog.list():
        if not replace:
            raise ValueError(f"Dataset name {name!r} is already registered; choose another name")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(
        name, lambda: load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
    )
    MetadataCatalog.get(name).set(
        json_file=json_file,
        source_json_file=source_json,
        image_root=image_root,
        evaluator_type="coco",
        **category_metadata(data),
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
