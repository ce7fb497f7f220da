"""What a SparseInst model has learnt: diagnostics run from the command line.

    python -m sparseinst_d2.diagnostics match-stats --config-file CONFIG --weights MODEL [...]
    python -m sparseinst_d2.diagnostics iam-toy [--lr 1e-3] [--steps 400] [...]

``match-stats`` (:mod:`.match_stats`) measures a checkpoint on the queries the bipartite matcher
assigns to the objects, with an optional linear probe of its features; ``iam-toy``
(:mod:`.iam_toy`) trains the decoder alone on a toy task where classes can be learnt only by
pooling inside the objects. They read the model from outside (its outputs, forward hooks):
nothing in the model exists for them.
"""

from typing import Optional, Sequence

from instseg_d2.utils.commands import run_command

from . import iam_toy, match_stats
from .maps import share_on_objects

COMMANDS = {"match-stats": match_stats.main, "iam-toy": iam_toy.main}


def main(argv: Optional[Sequence[str]] = None):
    """Run the diagnostic named by the first argument with the rest; return its result."""
    return run_command(COMMANDS, "python -m sparseinst_d2.diagnostics", argv)


__all__ = ["COMMANDS", "main", "share_on_objects"]
