#!/usr/bin/env python
"""Write a COCO-format annotation file holding the first N images of another (by image id).

    python tools/coco_subset.py INPUT.json OUTPUT.json --num-images 25

For evaluations too slow to run on a whole test set: register the output with
``train_net.py --dataset NAME=OUTPUT.json:IMAGE_DIR`` (same image folder) and pass
``DATASETS.TEST "('NAME',)"``. Categories and every other top-level field are kept.
"""

import argparse
import json


def subset(coco: dict, num_images: int) -> dict:
    """The images with the ``num_images`` smallest ids and their annotations."""
    if num_images < 1:
        raise ValueError(f"--num-images must be >= 1, got {num_images}")
    keep = {im["id"] for im in sorted(coco["images"], key=lambda im: im["id"])[:num_images]}
    out = dict(coco)
    out["images"] = [im for im in coco["images"] if im["id"] in keep]
    out["annotations"] = [a for a in coco.get("annotations", []) if a["image_id"] in keep]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--num-images", type=int, required=True)
    args = p.parse_args(argv)
    try:
        with open(args.input) as f:
            coco = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{args.input}: not a readable COCO json ({e})")
    if not isinstance(coco, dict) or "images" not in coco:
        raise SystemExit(f"{args.input}: no 'images' list: not a COCO annotation file")
    out = subset(coco, args.num_images)
    with open(args.output, "w") as f:
        json.dump(out, f)
    print(f"{args.output}: {len(out['images'])} images, {len(out['annotations'])} annotations")


if __name__ == "__main__":
    main()
