"""Write the ResNet of a trained checkpoint as initial weights for another model.

    python -m instseg_d2.engine.transfer_backbone SOURCE.pth OUTPUT.pth [--target-prefix backbone.]

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
from typing import Dict

import torch

from .checkpoint import CheckpointMismatchError, load_resnet_state


def transfer_backbone(source: str, output: str, target_prefix: str = "backbone.") -> Dict:
    """Write the ResNet of the checkpoint ``source`` under ``target_prefix`` to ``output``;
    return the written state dict.

    Raises:
        CheckpointMismatchError: naming ``source``, when it cannot be read or holds no ResNet.
    """
    state, prefix = load_resnet_state(source)
    out = {target_prefix + k: v for k, v in state.items()}
    torch.save({"model": out, "__author__": f"transfer_backbone from {source}"}, output)
    print(f"{output}: {len(out)} tensors from {source} ({prefix}* -> {target_prefix}*)")
    return out


def main(argv=None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--target-prefix", default="backbone.")
    args = p.parse_args(argv)
    try:
        return transfer_backbone(args.source, args.output, args.target_prefix)
    except CheckpointMismatchError as e:
        raise SystemExit(str(e)) from e


if __name__ == "__main__":
    main()
