#!/usr/bin/env python
"""Build the shared pretrained backbone of the shapes configs ahead of time.

    python tools/pretrain_backbone.py [--name shapes_R_18.pkl] [--output FILE]

Without ``--output`` it builds ``instseg://pretrained/<name>`` into the cache
(``$INSTSEG_CACHE/pretrained/``, what ``MODEL.WEIGHTS instseg://pretrained/<name>`` loads) unless
it is there already; with ``--output`` it writes the file there. Prints the held-out crop
accuracy and the time it took. See ``instseg_d2/pretrain.py``.
"""

import argparse
import logging
import pickle
import sys


def main(argv=None):
    from instseg_d2.pretrain import PRETRAIN_SPECS, pretrain_backbone, pretrained_path

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--name", default="shapes_R_18.pkl", choices=sorted(PRETRAIN_SPECS))
    p.add_argument("--output", default="", help="write here instead of the cache")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.output:
        record = pretrain_backbone(PRETRAIN_SPECS[args.name], args.output)
        path = args.output
    else:
        path = pretrained_path(args.name)
        with open(path, "rb") as f:
            record = pickle.load(f)["pretraining"]
    print(f"{path}: held-out crop accuracy {record['val_accuracy']:.4f}, "
          f"built in {record['wall_s']:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
