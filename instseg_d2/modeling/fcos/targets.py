"""FCOS target assignment: which ground-truth object (if any) every location regresses.

A location ``(x, y)`` of level ``l`` (stride ``s_l``) is a positive sample of a GT box when

1. it lies in the box, or with centre sampling in the box ``centre +- radius * s_l`` clipped to
   the GT box (the centre is the box centre, or the mask's centre of mass);
2. ``m_{l-1} <= max(l*, t*, r*, b*) <= m_l`` (the level's size range);

and among the boxes that pass both, it takes the one of minimum area. The regression target is
``(l*, t*, r*, b*) / s_l``.
"""

from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.structures import Instances

from ...layers import center_of_mass, instance_bitmasks

INF = 1e8


def size_ranges(sizes_of_interest: Sequence[float]) -> List[Tuple[float, float]]:
    """``[64, 128, 256, 512]`` -> ``[(-1, 64), (64, 128), (128, 256), (256, 512), (512, INF)]``."""
    bounds = [-1.0] + [float(s) for s in sizes_of_interest] + [INF]
    return list(zip(bounds[:-1], bounds[1:]))


def object_centers(instances: Instances, mode: str) -> torch.Tensor:
    """(G, 2) ``(x, y)`` sampling centres: box centres, or with ``mode == "mask"`` the masks'
    centres of mass (pixel-index coordinates, as the locations) where a mask is non-empty."""
    if mode not in ("mask", "box"):
        raise ValueError(f"MODEL.FCOS.CENTER_SAMPLE_MODE must be 'mask' or 'box', got {mode!r}")
    centers = instances.gt_boxes.get_centers()
    if mode == "mask" and instances.has("gt_masks") and len(instances) > 0:
        com = center_of_mass(instance_bitmasks(instances)).to(centers.dtype)
        ok = torch.isfinite(com).all(dim=1)
        centers = torch.where(ok[:, None], com, centers)
    return centers


def assign_image(
    locations: torch.Tensor,
    loc_strides: torch.Tensor,
    loc_ranges: torch.Tensor,
    boxes: torch.Tensor,
    centers: torch.Tensor,
    radius: float,
    center_sample: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Assign the locations of one image to its GT boxes.

    Args:
        locations: (K, 2) ``(x, y)`` of all levels' locations.
        loc_strides: (K,) stride of each location's level.
        loc_ranges: (K, 2) size range ``(lo, hi)`` of each location's level.
        boxes: (G, 4) XYXY GT boxes; centers: (G, 2) sampling centres.
        radius: centre-sampling radius in strides.

    Returns:
        gt_index (K,) int64, -1 for background; reg (K, 4) ``(l, t, r, b)`` in pixels towards
        the assigned box (undefined for background).
    """
    k = locations.shape[0]
    if boxes.numel() == 0:
        return locations.new_full((k,), -1, dtype=torch.long), locations.new_zeros(k, 4)
    xs, ys = locations[:, 0:1], locations[:, 1:2]
    reg = torch.stack(
        [xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys], dim=2
    )  # (K, G, 4)
    if center_sample:
        r = (loc_strides * radius)[:, None]  # (K, 1)
        x0 = torch.maximum(centers[:, 0] - r, boxes[:, 0])
        y0 = torch.maximum(centers[:, 1] - r, boxes[:, 1])
        x1 = torch.minimum(centers[:, 0] + r, boxes[:, 2])
        y1 = torch.minimum(centers[:, 1] + r, boxes[:, 3])
        inside = torch.stack([xs - x0, ys - y0, x1 - xs, y1 - ys], dim=2).min(dim=2).values > 0
    else:
        inside = reg.min(dim=2).values > 0
    max_reg = reg.max(dim=2).values
    in_range = (max_reg >= loc_ranges[:, 0:1]) & (max_reg <= loc_ranges[:, 1:2])
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(k, -1)
    areas = torch.where(inside & in_range, areas, torch.full_like(areas, INF))
    min_area, gt_index = areas.min(dim=1)  # ambiguity: the smallest box wins
    reg = reg[torch.arange(k, device=reg.device), gt_index]
    gt_index = torch.where(min_area < INF, gt_index, torch.full_like(gt_index, -1))
    return gt_index, reg


def fcos_targets(
    locations: List[torch.Tensor],
    gt_instances: List[Instances],
    strides: Sequence[int],
    sizes_of_interest: Sequence[float],
    num_classes: int,
    radius: float = 1.5,
    center_sample: bool = True,
    center_mode: str = "mask",
) -> Dict[str, torch.Tensor]:
    """Targets of a batch, flattened level-first (level, image, y, x), like the predictions.

    Args:
        locations: per level (H_l*W_l, 2), from :func:`instseg_d2.layers.compute_locations`.
        gt_instances: per image, with ``gt_boxes``, ``gt_classes`` (and ``gt_masks``).

    Returns:
        dict of (M,) / (M, k) tensors, M = N * sum_l H_l W_l: ``labels`` (C = background),
        ``reg_targets`` (l, t, r, b divided by the stride), ``gt_inds`` (index into the
        concatenation of all images' GT, -1 for background), ``im_inds``, ``fpn_levels``,
        ``locations``.
    """
    if len(strides) != len(locations):
        raise ValueError(f"{len(locations)} FCOS levels but {len(strides)} FPN_STRIDES")
    ranges = size_ranges(sizes_of_interest)
    if len(ranges) != len(locations):
        raise ValueError(
            f"SIZES_OF_INTEREST {list(sizes_of_interest)} gives {len(ranges)} ranges for "
            f"{len(locations)} levels (need one value fewer than levels)"
        )
    dev = locations[0].device
    counts = [len(loc) for loc in locations]
    levels = torch.cat(
        [torch.full((n,), i, dtype=torch.long, device=dev) for i, n in enumerate(counts)]
    )
    all_locs = torch.cat(locations)
    loc_strides = torch.tensor(strides, dtype=torch.float32, device=dev)[levels]
    loc_ranges = torch.tensor(ranges, dtype=torch.float32, device=dev)[levels]

    per_image = {"labels": [], "reg_targets": [], "gt_inds": []}
    offset = 0
    for inst in gt_instances:
        boxes = inst.gt_boxes.tensor.to(dev)
        centers = object_centers(inst, center_mode).to(dev)
        gt_index, reg = assign_image(
            all_locs, loc_strides, loc_ranges, boxes, centers, radius, center_sample
        )
        fg = gt_index >= 0
        labels = torch.full_like(gt_index, num_classes)
        labels[fg] = inst.gt_classes.to(dev)[gt_index[fg]]
        per_image["labels"].append(labels)
        per_image["reg_targets"].append(reg / loc_strides[:, None])
        per_image["gt_inds"].append(torch.where(fg, gt_index + offset, gt_index))
        offset += len(inst)

    n = len(gt_instances)
    out = {k: _level_first(torch.stack(v), counts) for k, v in per_image.items()}
    out["im_inds"] = _level_first(
        torch.arange(n, device=dev)[:, None].expand(n, len(all_locs)), counts
    )
    out["fpn_levels"] = _level_first(levels[None].expand(n, -1), counts)
    out["locations"] = _level_first(all_locs[None].expand(n, -1, -1), counts)
    return out


def _level_first(x: torch.Tensor, counts: List[int]) -> torch.Tensor:
    """(N, K, ...) image-first -> (N*K, ...) ordered level, image, location."""
    return torch.cat([p.reshape(-1, *x.shape[2:]) for p in torch.split(x, counts, dim=1)])
