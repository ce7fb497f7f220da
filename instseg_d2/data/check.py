"""Early data check: every image decodes and has the size its annotations say.

``train_net.py`` runs :func:`check_dataset_images` on the training and test sets before it
builds the model (``DATASETS.IMAGE_CHECK``), so that a corrupt image fails the run at once,
naming the file, instead of at its first read (possibly in the final evaluation).
``tools/check_dataset.py`` runs the same check and prints :func:`dataset_summary`.
"""

import logging
import multiprocessing as mp
import os
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from .coco import DatasetFormatError
from .image_io import to_8bit

logger = logging.getLogger(__name__)

IMAGE_CHECK_MODES = ("full", "header", "none")
_EXIF_ORIENTATION = 0x0112  # values 5-8 turn the image by 90 degrees: width and height swap
_MAX_LISTED = 10


def check_image(record: Tuple[str, int, int, bool]) -> Optional[str]:
    """``(file_name, height, width, full)`` -> None if the image is fine, else what is wrong
    (the message starts with the file name). ``full``: decode every pixel (finds a truncated
    file) and check that a 16-bit / float image can be scaled to 8 bits; else read the header
    only (PIL opens lazily)."""
    file_name, height, width, full = record
    try:
        with Image.open(file_name) as im:
            w, h = im.size
            if full:
                im.load()
                to_8bit(im, file_name)
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            else:
                orientation = _header_orientation(im)
            if orientation in (5, 6, 7, 8):
                w, h = h, w
    except Exception as e:  # PIL raises several types; say what and where, whatever it is
        return f"{file_name}: cannot be decoded ({type(e).__name__}: {e})"
    if (height, width) != (h, w):
        return (
            f"{file_name}: image is {h}x{w} (height x width), its annotations say {height}x{width}"
        )
    return None


def _header_orientation(im: Image.Image) -> int:
    """The EXIF orientation known without decoding pixels (``getexif`` of a PNG decodes it):
    EXIF read with the header (JPEG, WebP, a PNG eXIf chunk before the data), or a TIFF tag."""
    raw = im.info.get("exif")
    if raw:
        exif = Image.Exif()
        exif.load(raw)
        return exif.get(_EXIF_ORIENTATION, 1)
    tags = getattr(im, "tag_v2", None)  # TIFF
    return tags.get(_EXIF_ORIENTATION, 1) if tags is not None else 1


def check_images(
    records: Sequence[Tuple[str, int, int]], full: bool = True, workers: int = 0
) -> List[str]:
    """Check ``(file_name, height, width)`` records with :func:`check_image` in ``workers``
    processes (0: one per CPU core, at most 8; small sets are checked in this process).
    Returns the problems, one line per bad image."""
    jobs = [(f, h, w, full) for f, h, w in records]
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < 64:
        return [p for p in map(check_image, jobs) if p]
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else None)  # fork: no re-import
    with ctx.Pool(workers) as pool:
        found = pool.map(check_image, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
    return [p for p in found if p]


def dataset_image_records(name: str) -> List[Tuple[str, int, int]]:
    """``(file_name, height, width)`` of every image of registered dataset ``name``."""
    dicts = DatasetCatalog.get(name)
    missing = [d.get("file_name", d) for d in dicts if "height" not in d or "width" not in d]
    if missing:
        raise DatasetFormatError(
            f"Dataset {name!r}: {len(missing)} image(s) have no height/width, e.g. {missing[0]!r}"
        )
    return [(d["file_name"], d["height"], d["width"]) for d in dicts]


def check_dataset_images(names: Iterable[str], mode: str = "full", workers: int = 0) -> int:
    """Check every image of the datasets ``names`` (:func:`check_images`; ``mode`` one of
    :data:`IMAGE_CHECK_MODES`); return how many images were checked.

    Raises:
        DatasetFormatError: listing the bad images (file, and what is wrong) of each dataset.
    """
    if mode not in IMAGE_CHECK_MODES:
        raise ValueError(f"DATASETS.IMAGE_CHECK must be one of {IMAGE_CHECK_MODES}, got {mode!r}")
    if mode == "none":
        return 0
    checked, errors = set(), []
    for name in dict.fromkeys(names):  # each dataset once, in order
        records = [r for r in dataset_image_records(name) if r[0] not in checked]
        checked.update(r[0] for r in records)
        problems = check_images(records, full=mode == "full", workers=workers)
        if problems:
            listed = "\n  ".join(problems[:_MAX_LISTED])
            more = (
                f"\n  ... and {len(problems) - _MAX_LISTED} more"
                if len(problems) > _MAX_LISTED
                else ""
            )
            errors.append(f"dataset {name!r}: {len(problems)} bad image(s):\n  {listed}{more}")
    if errors:
        raise DatasetFormatError(
            "Image check (DATASETS.IMAGE_CHECK "
            f"{mode!r}; 'none' skips it) failed for " + "\n".join(errors)
        )
    return len(checked)


def dataset_summary(name: str) -> Dict:
    """Counts of registered dataset ``name``: ``images``, ``instances`` per class (not crowd),
    ``crowd``, ``empty_images`` (no annotation), ``classes``."""
    dicts = DatasetCatalog.get(name)
    classes = list(MetadataCatalog.get(name).get("thing_classes", []))
    per_class, crowd, empty = Counter(), 0, 0
    for d in dicts:
        annos = d.get("annotations", [])
        empty += not annos
        for a in annos:
            if a.get("iscrowd", 0):
                crowd += 1
            else:
                per_class[a["category_id"]] += 1
    return {
        "images": len(dicts),
        "instances": {c: per_class.get(i, 0) for i, c in enumerate(classes)},
        "crowd": crowd,
        "empty_images": empty,
        "classes": classes,
    }
