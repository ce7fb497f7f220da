"""Where the instance activation maps look."""

import torch
import torch.nn.functional as F


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
