#!/usr/bin/env python
"""Write the ResNet of a trained checkpoint as initial weights for another model.

    python tools/transfer_backbone.py SOURCE.pth OUTPUT.pth [--target-prefix backbone.]

The ResNet parameters and buffers of SOURCE (those under ``backbone.bottom_up.`` for an FPN
model, else under ``backbone.``, e.g. a trained shapes Mask R-CNN) are written under
``--target-prefix`` (``backbone.``: the plain ResNet of SparseInst; ``backbone.bottom_up.``: an
FPN model). Pass OUTPUT as ``MODEL.WEIGHTS`` when training: the rest of the model is missing
from it and keeps its initialisation.

This stands in for an ImageNet checkpoint where none can be downloaded (the shapes configs
train from scratch): it gives a method a backbone whose features already separate the shapes'
classes, to tell a method that cannot learn from one that learns slowly from scratch.
"""

import argparse

import torch

from instseg_d2.engine import CheckpointMismatchError, load_resnet_state


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--target-prefix", default="backbone.")
    args = p.parse_args(argv)
    try:
        state, prefix = load_resnet_state(args.source)
    except CheckpointMismatchError as e:
        raise SystemExit(str(e)) from e
    out = {args.target_prefix + k: v for k, v in state.items()}
    torch.save(
        {"model": out, "__author__": f"transfer_backbone.py from {args.source}"}, args.output
    )
    print(
        f"{args.output}: {len(out)} tensors from {args.source} ({prefix}* -> {args.target_prefix}*)"
    )
    return out


if __name__ == "__main__":
    main()
