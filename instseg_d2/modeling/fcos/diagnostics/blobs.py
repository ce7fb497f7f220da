"""Write a nuclei-like COCO dataset: many small bright elliptical blobs on a dark, noisy
background, one class ("nucleus"), RLE masks; deterministic from the seed.

    python -m instseg_d2.modeling.fcos.diagnostics make-blobs data/blobs_train --num-images 200 --seed 0
    python train_net.py --config-file configs/CondInst/shapes_CondInst_R_18.yaml \\
        --dataset blobs_train=data/blobs_train/annotations.json:data/blobs_train/images ...

Blobs have semi-axes of 3-9 px (boxes of about 6-18 px, all on FCOS's P3 with the shapes
configs' sizes of interest) and do not overlap. ``projects/FCOS/NOTES.md`` uses it to reproduce
the collapse of FCOS's box regression on small objects.
"""

import argparse
import json
import os

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image


def render(rng: np.random.Generator, size: int, min_blobs: int, max_blobs: int):
    """One (size, size) uint8 image and its blob masks (list of (size, size) bool arrays)."""
    img = rng.normal(20, 6, (size, size))
    yy, xx = np.mgrid[:size, :size]
    taken = np.zeros((size, size), bool)
    masks = []
    for _ in range(rng.integers(min_blobs, max_blobs + 1)):
        cx, cy = rng.uniform(8, size - 8, 2)
        a, b = rng.uniform(3, 9, 2)
        theta = rng.uniform(0, np.pi)
        dx, dy = xx - cx, yy - cy
        u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
        v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
        m = u**2 + v**2 <= 1
        if (m & taken).any() or m.sum() < 12:
            continue  # no overlaps, no specks
        taken |= m
        img[m] = rng.uniform(120, 230) + rng.normal(0, 10, m.sum())
        masks.append(m)
    return np.clip(img, 0, 255).astype(np.uint8), masks


def make_blobs(out_dir: str, num_images: int, seed: int, size: int = 128,
               min_blobs: int = 6, max_blobs: int = 19) -> str:  # fmt: skip
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json``; return the json path."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images, anns = [], []
    for i in range(num_images):
        img, masks = render(rng, size, min_blobs, max_blobs)
        name = f"{i:05d}.png"
        Image.fromarray(img).convert("RGB").save(os.path.join(out_dir, "images", name))
        images.append({"id": i + 1, "file_name": name, "height": size, "width": size})
        for m in masks:
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle, "area": float(m.sum()),
                         "bbox": mask_util.toBbox(rle).tolist()})  # fmt: skip
    path = os.path.join(out_dir, "annotations.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 1, "name": "nucleus"}]}, f)  # fmt: skip
    return path


def main(argv=None, prog=None):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("out_dir")
    p.add_argument("--num-images", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--min-blobs", type=int, default=6)
    p.add_argument("--max-blobs", type=int, default=19)
    args = p.parse_args(argv)
    path = make_blobs(args.out_dir, args.num_images, args.seed, args.size, args.min_blobs,
                      args.max_blobs)  # fmt: skip
    print(path)
