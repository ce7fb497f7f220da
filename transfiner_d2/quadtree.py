"""Quadtree node selection on the incoherence map (paper Sec. 3.3), vectorised over instances.

Level 0 is the coarse mask grid (28 x 28); level l has ``28 * 2^l`` cells per side. A cell of
level l is a node when the incoherence map, nearest-upsampled to level l (each 28 x 28 cell's
children inherit its value), reaches the level's threshold. Cells are indexed row-major.
"""

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F


def level_incoherence(incoherence: torch.Tensor, size: int) -> torch.Tensor:
    """(R, S0, S0) incoherence -> (R, size * size), nearest-upsampled (children inherit)."""
    if incoherence.shape[-1] != size:
        incoherence = F.interpolate(incoherence[:, None], (size, size), mode="nearest")[:, 0]
    return incoherence.flatten(1)


def node_masks(
    incoherence: torch.Tensor, sizes: Sequence[int], thresholds: Sequence[float]
) -> List[torch.Tensor]:
    """Which cells are nodes, per level.

    Args:
        incoherence: (R, S0, S0) predicted incoherence probabilities.
        sizes: side of each level (S0, 2 S0, ...).
        thresholds: one per level.

    Returns:
        per level, (R, size * size) bool.
    """
    if len(sizes) != len(thresholds):
        raise ValueError(f"quadtree: {len(sizes)} levels but {len(thresholds)} thresholds")
    return [level_incoherence(incoherence, s) >= t for s, t in zip(sizes, thresholds)]


def sample_train_nodes(
    masks: List[torch.Tensor], num_nodes: int, min_nodes: int, generator=None
) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Training: draw ``num_nodes`` nodes per level and instance.

    The nodes of an instance are put in random order; with fewer than ``num_nodes`` nodes the
    order repeats cyclically (as the reference's ``randperm(n).repeat(...)``). An instance is
    invalid (not refined) if any level has fewer than ``min_nodes`` nodes.

    Args:
        masks: per level, (R, cells) bool from :func:`node_masks`.

    Returns:
        per level the (R, num_nodes) cell indices (meaningless for invalid instances), and the
        (R,) bool validity.
    """
    valid = torch.ones(masks[0].shape[0], dtype=torch.bool, device=masks[0].device)
    indices = []
    for m in masks:
        counts = m.sum(dim=1)
        valid &= counts >= min_nodes
        keys = torch.rand(m.shape, device=m.device, generator=generator)
        keys = torch.where(m, keys, torch.full_like(keys, 2.0))  # non-nodes sort last
        order = keys.argsort(dim=1)  # first counts[r] entries: a random permutation of nodes
        cyc = torch.arange(num_nodes, device=m.device)[None] % counts.clamp(min=1)[:, None]
        indices.append(order.gather(1, cyc))
    return indices, valid


@torch.jit.script_if_tracing
def all_nodes(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inference: every node of one level, padded to the largest count.

    Args:
        mask: (R, cells) bool.

    Returns:
        (R, M) cell indices (row-major order; padding points at cell 0) and (R, M) bool
        validity, with M = max nodes over instances. Scripted when traced (M depends on the
        data).
    """
    counts = mask.sum(dim=1)
    m = int(counts.max().item()) if mask.size(0) > 0 else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :m]
    valid = torch.arange(m, device=mask.device)[None] < counts[:, None]
    return torch.where(valid, order, torch.zeros_like(order)), valid


def gather_cells(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather grid cells.

    Args:
        x: (R, C, S, S) per-instance feature grid, or (R, S, S) single-channel grid.
        index: (R, M) row-major cell indices.

    Returns:
        (R, M, C), or (R, M) for a single-channel grid.
    """
    if x.dim() == 3:
        return x.flatten(1).gather(1, index)
    flat = x.flatten(2)
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)
