"""What a SparseInst model has learnt: diagnostics run from the command line.

    python -m sparseinst_d2.diagnostics match-stats --config-file CONFIG --weights MODEL [...]
    python -m sparseinst_d2.diagnostics iam-toy [--lr 1e-3] [--steps 400] [...]

``match-stats`` (:mod:`.match_stats`) measures a checkpoint on the queries the bipartite matcher
assigns to the objects, with an optional linear probe of its features; ``iam-toy``
(:mod:`.iam_toy`) trains the decoder alone on a toy task where classes can be learnt only by
pooling inside the objects. They read the model from outside (its outputs, forward hooks):
nothing in the model exists for them.
"""

import importlib
import sys
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

COMMANDS = {"match-stats": "match_stats", "iam-toy": "iam_toy"}


def share_on_objects(weights: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """How much of each query's pooling weight lies on its object.

    Args:
        weights: (G, M, h, w) normalised activation maps (each map sums to 1) of M queries.
        objects: (M, H, W) their objects' masks in [0, 1], at any resolution that is a
            multiple of (h, w): each is averaged over the cells of the maps.

    Returns:
        (M,) the weight on the object, averaged over the G maps of a query.
    """
    cells = F.interpolate(objects[:, None].float(), size=weights.shape[-2:], mode="area")[:, 0]
    return (weights * cells[None]).flatten(2).sum(-1).mean(0)


def main(argv: Optional[Sequence[str]] = None):
    """Run the diagnostic named by the first argument with the rest; return its result."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(
            f"usage: python -m {__name__} {{{','.join(COMMANDS)}}} ... (-h for a command's "
            f"options); got {argv[:1] or 'nothing'}"
        )
    module = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]]}")
    return module.main(argv[1:], prog=f"python -m {__name__} {argv[0]}")
