"""The embedded "shapes" dataset: procedural instance segmentation, deterministic from a seed.

Each image shows 2-8 filled shapes of five classes (circle, square, triangle, star, cross) with
random colour, size (small to large), aspect, rotation and position, on a textured background
(smooth colour noise, stripes or a checkerboard, plus pixel noise). Shapes overlap and occlude
one another (later ones are drawn on top; annotations hold the *visible* part), some are
placed so that they touch, and some are cut by the image border. Every painted shape is
annotated: a placement that would hide too much of an earlier shape is redrawn.

The dataset is written once as COCO json (RLE masks) + PNG images to a cache folder
(``$INSTSEG_CACHE`` or ``~/.cache/instseg_d2``) and registered as ``shapes_train`` and
``shapes_val`` (``evaluator_type="coco"``).
"""

import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import List, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image, ImageDraw

SHAPES_CLASSES = ("circle", "square", "triangle", "star", "cross")
_FORMAT_VERSION = 2


@dataclass(frozen=True)
class ShapesSpec:
    """Parameters of one split. Changing any of them yields a new cache folder."""

    num_images: int
    seed: int
    image_size: int = 128
    min_instances: int = 2
    max_instances: int = 8
    min_shape_size: float = 10.0  # side / diameter in pixels, drawn log-uniformly
    max_shape_size: float = 110.0
    min_visible_fraction: float = 0.35  # of a shape's in-image area, after occlusion
    min_visible_pixels: int = 20
    touch_probability: float = 0.3  # place a shape against an earlier one
    background_contrast: Tuple[float, float] = (0.35, 0.7)  # texture vs flat colour


SHAPES_SPLITS = {
    "shapes_train": ShapesSpec(num_images=1000, seed=0),
    "shapes_val": ShapesSpec(num_images=200, seed=1),
}
# The comparison protocol's data: fewer and larger shapes than the stress splits above, less
# occlusion, calmer backgrounds (median object 24 px, 1-5 per image).
_CMP = dict(min_instances=1, max_instances=5, min_shape_size=20.0, max_shape_size=72.0,
            min_visible_fraction=0.6, touch_probability=0.15, background_contrast=(0.2, 0.5))  # fmt: skip
SHAPES_SPLITS.update(
    shapes_cmp_train=ShapesSpec(num_images=1000, seed=10, **_CMP),
    shapes_cmp_val=ShapesSpec(num_images=200, seed=11, **_CMP),
)


def cache_root() -> str:
    return os.path.expanduser(os.environ.get("INSTSEG_CACHE", "~/.cache/instseg_d2"))


def split_dir(name: str, spec: ShapesSpec) -> str:
    tag = f"v{_FORMAT_VERSION}_n{spec.num_images}_s{spec.seed}_{spec.image_size}px"
    return os.path.join(cache_root(), "shapes", f"{name}_{tag}_{_spec_digest(spec)}")


def _spec_digest(spec: ShapesSpec) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------
def _regular_polygon(n: int, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _unit_outline(cls: int) -> np.ndarray:
    """Outline of a class in unit coordinates (fits in [-1, 1]^2), (P, 2)."""
    name = SHAPES_CLASSES[cls]
    if name == "circle":
        return _regular_polygon(64, 0.0)
    if name == "square":
        return _regular_polygon(4, np.pi / 4) * np.sqrt(2) * 0.9
    if name == "triangle":
        return _regular_polygon(3, -np.pi / 2)
    if name == "star":
        outer = _regular_polygon(5, -np.pi / 2)
        inner = _regular_polygon(5, -np.pi / 2 + np.pi / 5) * 0.42
        return np.stack([outer, inner], axis=1).reshape(-1, 2)
    if name == "cross":
        t = 1.0 / 3
        return np.array(
            [[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1], [-t, t],
             [-1, t], [-1, -t], [-t, -t]]
        )  # fmt: skip
    raise ValueError(name)


def _background(
    rng: np.random.Generator, size: int, contrast_range: Tuple[float, float] = (0.35, 0.7)
) -> np.ndarray:
    """(size, size, 3) float background: smooth noise, stripes or checkerboard, blended with a
    flat colour so that its contrast varies from image to image (``contrast_range`` of full
    contrast)."""
    kind = rng.integers(3)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == 0:  # smooth colour noise: a coarse random grid upsampled bilinearly
        g = int(rng.integers(3, 9))
        coarse = rng.uniform(0, 255, (g, g, 3)).astype(np.uint8)
        tex = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), np.float64)
    elif kind == 1:  # stripes of random orientation and period
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 30)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
        tex = t[..., None] * c0 + (1 - t[..., None]) * c1
    else:  # checkerboard
        cell = int(rng.integers(6, 24))
        t = ((xx // cell + yy // cell) % 2)[..., None]
        tex = t * c0 + (1 - t) * c1
    contrast = rng.uniform(*contrast_range)
    flat = rng.uniform(0, 255, 3)
    return contrast * tex + (1 - contrast) * flat


def _shape_mask(
    rng: np.random.Generator, cls: int, center: Tuple[float, float], size: float, img_size: int
) -> np.ndarray:
    """Rasterise one shape (random rotation and aspect) to a bool (H, W) mask."""
    outline = _unit_outline(cls) * (size / 2)
    aspect = np.exp(rng.uniform(-0.3, 0.3))
    outline = outline * np.array([aspect, 1 / aspect])
    if SHAPES_CLASSES[cls] != "circle" or aspect != 1:
        a = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        outline = outline @ rot.T
    pts = outline + np.asarray(center)
    canvas = Image.new("L", (img_size, img_size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in pts], fill=1)
    return np.asarray(canvas, dtype=bool)


def render_image(rng: np.random.Generator, spec: ShapesSpec):
    """Render one image.

    Returns:
        image: (S, S, 3) uint8 RGB.
        instances: list of (class index, visible mask, whole in-image mask), bool (S, S) masks,
            bottom to top; the visible mask is the whole one minus the shapes drawn later.
    """
    s = spec.image_size
    img = _background(rng, s, spec.background_contrast)
    target = int(rng.integers(spec.min_instances, spec.max_instances + 1))
    full: List[np.ndarray] = []  # in-image area of each shape
    classes: List[int] = []
    sizes: List[float] = []
    centers: List[np.ndarray] = []
    log_lo, log_hi = np.log(spec.min_shape_size), np.log(spec.max_shape_size)
    for _ in range(target):
        for _attempt in range(20):
            cls = int(rng.integers(len(SHAPES_CLASSES)))
            size = float(np.exp(rng.uniform(log_lo, log_hi)))
            if centers and rng.uniform() < spec.touch_probability:
                j = int(rng.integers(len(centers)))
                ang = rng.uniform(0, 2 * np.pi)
                dist = 0.45 * (size + sizes[j])
                center = centers[j] + dist * np.array([np.cos(ang), np.sin(ang)])
            else:
                center = rng.uniform(-0.05 * s, 1.05 * s, 2)
            m = _shape_mask(rng, cls, center, size, s)
            if m.sum() < spec.min_visible_pixels:
                continue
            # the new shape must not hide too much of any earlier one
            if all(_visible_ok(f & ~m & _not_covered(full[i + 1 :]), f, spec) for i, f in
                   enumerate(full)):  # fmt: skip
                full.append(m)
                classes.append(cls)
                sizes.append(size)
                centers.append(np.asarray(center))
                break
    instances = []
    covered = np.zeros((s, s), dtype=bool)
    colors = []
    for m in full:
        colors.append(_contrasting_color(rng, img, m))
    for i in range(len(full) - 1, -1, -1):  # top to bottom: visible = full minus later shapes
        instances.append((classes[i], full[i] & ~covered, full[i]))
        covered |= full[i]
    instances.reverse()
    for m, c in zip(full, colors):
        img[m] = c + rng.normal(0, 6, 3)
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), instances


def _not_covered(later: List[np.ndarray]) -> np.ndarray:
    if not later:
        return np.ones((), dtype=bool)
    return ~np.logical_or.reduce(later)


def _visible_ok(visible: np.ndarray, full: np.ndarray, spec: ShapesSpec) -> bool:
    n = visible.sum()
    return n >= spec.min_visible_pixels and n >= spec.min_visible_fraction * full.sum()


def _contrasting_color(rng, img, mask) -> np.ndarray:
    local = img[mask].mean(axis=0)
    for _ in range(10):
        c = rng.uniform(0, 255, 3)
        if np.abs(c - local).sum() > 120:
            return c
    return 255 - local


# ----------------------------------------------------------------------------------------
# Writing and registration
# ----------------------------------------------------------------------------------------
def generate_shapes(out_dir: str, spec: ShapesSpec) -> str:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json``; return the json path."""
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for idx in range(spec.num_images):
        rng = np.random.default_rng([spec.seed, idx])
        image, instances = render_image(rng, spec)
        file_name = f"{idx:06d}.png"
        Image.fromarray(image).save(os.path.join(img_dir, file_name))
        images.append(
            {
                "id": idx + 1,
                "file_name": file_name,
                "height": image.shape[0],
                "width": image.shape[1],
            }
        )
        for cls, m, _ in instances:
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": idx + 1,
                    "category_id": cls + 1,
                    "segmentation": rle,
                    "area": float(m.sum()),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {"description": "instseg_d2 shapes", "spec": asdict(spec)},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES_CLASSES)
        ],
    }
    json_path = os.path.join(out_dir, "annotations.json")
    with open(json_path, "w") as f:
        json.dump(data, f)
    return json_path


def ensure_shapes(name: str) -> Tuple[str, str]:
    """Generate split ``name`` into the cache if needed (safe across processes).

    Returns:
        (json_file, image_root)
    """
    spec = SHAPES_SPLITS[name]
    final = split_dir(name, spec)
    json_file, image_root = os.path.join(final, "annotations.json"), os.path.join(final, "images")
    if os.path.isfile(json_file):
        return json_file, image_root
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    with open(os.path.join(parent, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(json_file):
            tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}_tmp")
            try:
                generate_shapes(tmp, spec)
                if os.path.isdir(final):
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp)
    return json_file, image_root


def register_shapes() -> None:
    """Register ``shapes_train`` and ``shapes_val`` (generated on first use)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json

    for name, spec in SHAPES_SPLITS.items():
        if name in DatasetCatalog.list():
            continue

        def _load(name=name):
            json_file, image_root = ensure_shapes(name)
            return load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])

        DatasetCatalog.register(name, _load)
        final = split_dir(name, spec)
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASSES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
            json_file=os.path.join(final, "annotations.json"),
            image_root=os.path.join(final, "images"),
            evaluator_type="coco",
        )


def render_object_crop(
    rng: np.random.Generator,
    size: int = 64,
    shape_size: Tuple[float, float] = (12.0, 60.0),
    background_contrast: Tuple[float, float] = (0.35, 0.7),
) -> Tuple[np.ndarray, int]:
    """One object-centred sample for backbone pretraining: a single shape of a random class,
    size (log-uniform in ``shape_size``), aspect, rotation and colour near the centre of a
    ``size`` x ``size`` background drawn as in the detection images.

    Returns:
        image: (size, size, 3) uint8 RGB; cls: the class index into SHAPES_CLASSES.
    """
    img = _background(rng, size, background_contrast)
    cls = int(rng.integers(len(SHAPES_CLASSES)))
    side = float(np.exp(rng.uniform(np.log(shape_size[0]), np.log(shape_size[1]))))
    center = size / 2 + rng.uniform(-size / 8, size / 8, 2)
    m = _shape_mask(rng, cls, center, side, size)
    img[m] = _contrasting_color(rng, img, m) + rng.normal(0, 6, 3)
    img = img + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), cls
