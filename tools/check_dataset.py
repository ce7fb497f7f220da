#!/usr/bin/env python
"""Check datasets before training and print a summary of each.

    python tools/check_dataset.py shapes_val
    python tools/check_dataset.py mine_train=data/train.json:data/images \\
        mine_val=data/val.json:data/images [--header-only] [--workers N]

Each DATASET is a registered name (``shapes_train``, ``shapes_val``, detectron2's builtins) or
``NAME=annotations.json:image_dir`` (registered as ``train_net.py --dataset`` does, with the
same validation of the json and the same handling of placeholder classes). The check is the one
``train_net.py`` runs before training (``DATASETS.IMAGE_CHECK``): every image is decoded (the
header only with ``--header-only``) in parallel worker processes and must have the size its
annotations say. Per dataset: images, instances per class, crowd regions, images without
annotations, and every bad image (size mismatch, unreadable file) by name. Exit code 1 if an
image is bad.
"""

import argparse
import sys

from instseg_d2.data import DatasetFormatError, parse_dataset_arg, register_coco_instances_checked
from instseg_d2.data.check import check_images, dataset_image_records, dataset_summary


def format_summary(name: str, summary: dict, problems: list) -> str:
    """The printed block of one dataset (see :func:`instseg_d2.data.check.dataset_summary`)."""
    lines = [f"== {name}", f"images: {summary['images']}"]
    width = max([len(c) for c in summary["instances"]] + [5])
    lines.append(
        f"instances: {sum(summary['instances'].values())} in {len(summary['classes'])} classes"
    )
    for cls, n in summary["instances"].items():
        lines.append(f"  {cls:<{width}} {n:>8}{'  (none)' if n == 0 else ''}")
    lines.append(f"crowd regions: {summary['crowd']}")
    lines.append(f"images without annotations: {summary['empty_images']}")
    sizes = [p for p in problems if "annotations say" in p]
    lines.append(f"size mismatches: {len(sizes)}")
    lines.append(f"unreadable images: {len(problems) - len(sizes)}")
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="NAME or NAME=JSON:IMAGE_DIR")
    p.add_argument("--header-only", action="store_true", help="read image headers only (fast)")
    p.add_argument("--workers", type=int, default=0, help="processes (0: one per core, <= 8)")
    p.add_argument("--keep-background-class", action="store_true")
    p.add_argument("--drop-empty-classes", action="store_true")
    args = p.parse_args(argv)
    bad = 0
    for spec in args.datasets:
        try:
            if "=" in spec:
                name = parse_dataset_arg(spec)[0]
                register_coco_instances_checked(
                    *parse_dataset_arg(spec), replace=True,
                    keep_background=args.keep_background_class, drop_empty=args.drop_empty_classes,
                )  # fmt: skip
            else:
                name = spec
            records = dataset_image_records(name)
            summary = dataset_summary(name)
        except (DatasetFormatError, FileNotFoundError, KeyError, ValueError) as e:
            print(f"== {spec}\nnot usable: {e}", flush=True)
            bad += 1
            continue
        problems = check_images(records, full=not args.header_only, workers=args.workers)
        bad += bool(problems)
        print(format_summary(name, summary, problems) + "\n", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
