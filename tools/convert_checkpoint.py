#!/usr/bin/env python
"""Write a published reference checkpoint in this project's format (with its ``instseg_meta``).

    python tools/convert_checkpoint.py --config-file configs/CondInst/CondInst_MS_R_50_1x.yaml \
        --input CondInst_MS_R_50_1x.pth --output condinst_r50_1x.pth [KEY VALUE ...]

The input (a path or a URL, as ``MODEL.WEIGHTS``) is loaded into the config's model exactly as
``train_net.py --eval-only`` loads it (the converters registered by the method packages, see
``instseg_d2/engine/conversion.py``); the checkpoint must fit the model: no parameter of the
model missing or of another shape, nothing left over. ``MODEL.WEIGHTS`` takes the input as it
is too: converting first only saves the conversion at every load.
"""

import argparse
import sys

import torch
from detectron2.utils.logger import setup_logger

from instseg_d2.engine import (
    CheckpointMismatchError,
    InstSegCheckpointer,
    Trainer,
    build_config,
    checkpoint_meta,
)
from instseg_d2.engine.checkpoint import META_KEY


class _Recording(InstSegCheckpointer):
    """Keeps what the load left incompatible (the checkpointer itself only logs unused keys)."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def convert(config_file: str, source: str, output: str, opts=()) -> dict:
    """Load ``source`` into the model of ``config_file`` strictly, save it to ``output``; return
    what was written. Raises :class:`CheckpointMismatchError` if it does not fit the model."""
    cfg = build_config(config_file, list(opts) + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    model = Trainer.build_model(cfg)
    meta = checkpoint_meta(cfg)
    checkpointer = _Recording(model, meta=meta, strict=True)
    checkpointer.load(source)  # strict: refuses missing parameters and other shapes
    unused = checkpointer.incompatible.unexpected_keys
    if unused:
        raise CheckpointMismatchError(
            f"{source}: {len(unused)} tensor(s) fit no parameter of the model of {config_file} "
            f"(e.g. {unused[:5]}); is it a checkpoint of another configuration?"
        )
    ckpt = {
        "model": model.state_dict(),
        META_KEY: meta,
        "__author__": f"{source}, converted by tools/convert_checkpoint.py",
    }
    torch.save(ckpt, output)
    return ckpt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True, help="config of the model the file holds")
    p.add_argument("--input", required=True, help="reference checkpoint: path or URL")
    p.add_argument("--output", required=True, help="converted checkpoint (.pth)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    setup_logger(name="fvcore")  # the checkpointer's line saying what it recognised and did
    try:
        ckpt = convert(args.config_file, args.input, args.output, args.opts)
    except (CheckpointMismatchError, FileNotFoundError) as e:
        sys.exit(f"convert_checkpoint: {e}")
    meta = ckpt[META_KEY]
    print(
        f"{args.output}: {len(ckpt['model'])} tensors of {meta['meta_architecture']} "
        f"({len(meta['thing_classes'] or [])} classes)"
    )


if __name__ == "__main__":
    main()
