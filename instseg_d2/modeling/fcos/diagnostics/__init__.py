"""Diagnostics of FCOS's box regression, run from the command line.

    python -m instseg_d2.modeling.fcos.diagnostics make-blobs OUT_DIR --num-images N [...]
    python -m instseg_d2.modeling.fcos.diagnostics collapse-probe --config-file C --iters N ...

``make-blobs`` (:mod:`.blobs`) writes a nuclei-like COCO dataset of many small blobs;
``collapse-probe`` (:mod:`.collapse_probe`) trains FCOS (or AdelaiDet's, for comparison) on fixed
batches and logs, per iteration, what the box branch outputs and which way GIoU pushes it
(``projects/FCOS/NOTES.md``: the collapse of the box regression on small objects).
"""

from typing import Optional, Sequence

from instseg_d2.utils.commands import run_command

from . import blobs, collapse_probe

COMMANDS = {"make-blobs": blobs.main, "collapse-probe": collapse_probe.main}


def main(argv: Optional[Sequence[str]] = None):
    """Run the diagnostic named by the first argument with the rest; return its result."""
    return run_command(COMMANDS, "python -m instseg_d2.modeling.fcos.diagnostics", argv)


__all__ = ["COMMANDS", "main"]
