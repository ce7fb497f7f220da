"""The embedded shapes dataset: deterministic, valid COCO, not trivial."""

import filecmp
import json
import os

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from instseg_d2.data import SHAPES_CLASSES, SHAPES_SPLITS, ensure_shapes
from instseg_d2.data.coco import validate_coco_dict
from instseg_d2.data.shapes import ShapesSpec, generate_shapes, render_image

SPEC = ShapesSpec(num_images=12, seed=7)


def test_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate_shapes(str(a), SPEC)
    generate_shapes(str(b), SPEC)
    assert filecmp.cmp(a / "annotations.json", b / "annotations.json", shallow=False)
    names = sorted(os.listdir(a / "images"))
    assert len(names) == SPEC.num_images
    match, mismatch, errors = filecmp.cmpfiles(a / "images", b / "images", names, shallow=False)
    assert match == names and not mismatch and not errors
    other = tmp_path / "c"
    generate_shapes(str(other), ShapesSpec(num_images=12, seed=8))
    assert not filecmp.cmp(a / "annotations.json", other / "annotations.json", shallow=False)


def test_valid_coco_and_consistent(tmp_path):
    json_file = generate_shapes(str(tmp_path), SPEC)
    with open(json_file) as f:
        data = json.load(f)
    validate_coco_dict(data, json_file, str(tmp_path / "images"))
    coco = COCO(json_file)  # pycocotools loads it
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES_CLASSES)
    assert len(coco.getImgIds()) == SPEC.num_images
    union = {}
    for ann in coco.loadAnns(coco.getAnnIds()):
        m = coco.annToMask(ann).astype(bool)
        assert m.sum() == ann["area"] >= SPEC.min_visible_pixels
        ys, xs = np.nonzero(m)
        x, y, w, h = ann["bbox"]
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        prev = union.get(ann["image_id"], np.zeros_like(m))
        assert not (prev & m).any(), "visible masks of one image must not overlap"
        union[ann["image_id"]] = prev | m


def test_not_trivial(tmp_path):
    spec = ShapesSpec(num_images=60, seed=3)
    generate_shapes(str(tmp_path), spec)
    coco = COCO(str(tmp_path / "annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    counts = [len(coco.getAnnIds(imgIds=[i])) for i in coco.getImgIds()]
    assert min(counts) >= 1 and max(counts) >= 6
    assert {a["category_id"] for a in anns} == set(range(1, len(SHAPES_CLASSES) + 1))
    areas = np.array([a["area"] for a in anns])
    assert (areas < 32**2).mean() > 0.3 and (areas > 40**2).sum() > 5  # small and big
    # occlusion: a good share of instances are partly hidden, none by more than the spec allows
    visible_fraction = []
    for idx in range(30):
        _, instances = render_image(np.random.default_rng([spec.seed, idx]), spec)
        visible_fraction += [vis.sum() / full.sum() for _, vis, full in instances]
    visible_fraction = np.array(visible_fraction)
    assert (visible_fraction < 0.95).mean() > 0.15
    assert visible_fraction.min() >= spec.min_visible_fraction
    # touching instances: some pairs of masks are adjacent
    touching = 0
    for img_id in coco.getImgIds():
        ms = [
            coco.annToMask(a).astype(bool) for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        ]
        for i in range(len(ms)):
            grown = np.zeros_like(ms[i])
            grown[:-1] |= ms[i][1:]
            grown[1:] |= ms[i][:-1]
            grown[:, :-1] |= ms[i][:, 1:]
            grown[:, 1:] |= ms[i][:, :-1]
            touching += sum(bool((grown & ms[j]).any()) for j in range(i + 1, len(ms)))
    assert touching > 10


def test_registered_splits_generate_on_demand():
    json_file, image_root = ensure_shapes("shapes_val")
    assert os.path.isfile(json_file)
    assert len(os.listdir(image_root)) == SHAPES_SPLITS["shapes_val"].num_images
    again = ensure_shapes("shapes_val")  # cached: same paths, no regeneration
    assert again == (json_file, image_root)
    rle = COCO(json_file).loadAnns(1)[0]["segmentation"]
    assert mask_util.decode(rle).shape == (128, 128)
