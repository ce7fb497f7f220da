"""SOLO's grid target assignment, shared by SOLO, Decoupled SOLO and SOLOv2.

For each level with grid S and scale range [lo, hi], every ground truth with
``lo <= sqrt(box_w * box_h) <= hi`` and a non-empty mask is assigned to cells (i, j) of the
S x S grid laid over the (padded) input image:

1. centre = the mask's centre of mass (pixel-index coordinates), its cell
   ``(floor(S * cy / H), floor(S * cx / W))``;
2. centre region = centre +- 0.5 * sigma * (box_w, box_h), converted to cells the same way and
   clamped to the grid;
3. the region is intersected with the 3x3 neighbourhood of the centre cell;
4. every cell of the result is positive, with the instance's class and mask as targets.

Two instances hitting the same cell: the later one (in annotation order) takes the cell, class
and mask, as mmdet SOLO does (AdelaiDet's SOLOv2 also overwrites the class but keeps both masks
as targets of the cell; here a cell always has one instance, consistent class and mask).
``rules="reference"`` (``MODEL.SOLO.TARGET_RULES``) selects AdelaiDet's rules instead, see
:mod:`solo_d2.reference_rules`.
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import Instances

from instseg_d2.layers import center_of_mass

from .reference_rules import grid_cell

TARGET_RULES = ("paper", "reference")


@dataclass
class LevelTargets:
    """Targets of one level for a batch.

    labels: (N, S, S) int64 class of each cell, ``num_classes`` for background.
    pos: (P, 3) int64 rows ``(image, cell, gt)``: positive cell ``i * S + j`` of that image and
        the index of its instance in that image's ``gt_*`` fields. With the paper's rules a cell
        appears once (ordered by image, cell); with the reference's, once per instance whose
        region covers it (ordered by image, instance, cell).
    """

    labels: torch.Tensor
    pos: torch.Tensor


def assign_level(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    centers: torch.Tensor,
    image_size: Tuple[int, int],
    num_grid: int,
    scale_range: Sequence[float],
    sigma: float,
    num_classes: int,
    rules: str = "paper",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Assign one image's instances to one level's S x S grid.

    Args:
        boxes: (G, 4) XYXY boxes in input pixels (their size gives the scale and the region).
        classes: (G,) class indices.
        centers: (G, 2) mask centres of mass ``(x, y)``; NaN for empty masks (never positive).
        image_size: (H, W) of the padded input the grid is laid over.
        num_grid: S.
        scale_range: (lo, hi) on sqrt(box area), inclusive.
        sigma: centre-region scale.
        num_classes: background label.
        rules: "paper" or "reference" (cell arithmetic in float32, as AdelaiDet).

    Returns:
        labels (S, S) int64 and owner (S, S) int64: the instance index of each cell, -1 if none.
    """
    region = level_regions(boxes, centers, image_size, num_grid, scale_range, sigma, rules)
    return _cell_owners(region, classes, num_classes)


def _cell_owners(region: torch.Tensor, classes: torch.Tensor, num_classes: int):
    """labels and owner (S, S) of the (G, S, S) regions: the last instance covering a cell."""
    g, s = region.shape[0], region.shape[-1]
    owner = torch.full((s, s), -1, dtype=torch.int64, device=region.device)
    labels = torch.full((s, s), num_classes, dtype=torch.int64, device=region.device)
    if g == 0:
        return labels, owner
    rank = torch.arange(1, g + 1, device=region.device).view(g, 1, 1)
    owner = (region.long() * rank).max(dim=0).values - 1  # the last instance wins
    labels = torch.where(owner >= 0, classes[owner.clamp(min=0)], labels)
    return labels, owner


def level_regions(
    boxes: torch.Tensor,
    centers: torch.Tensor,
    image_size: Tuple[int, int],
    num_grid: int,
    scale_range: Sequence[float],
    sigma: float,
    rules: str = "paper",
) -> torch.Tensor:
    """(G, S, S) bool: the cells of each instance's centre region (empty for instances out of
    the scale range or with an empty mask); arguments as :func:`assign_level`."""
    if rules not in TARGET_RULES:
        raise ValueError(f"MODEL.SOLO.TARGET_RULES must be one of {TARGET_RULES}, got {rules!r}")
    s, device = int(num_grid), boxes.device
    if boxes.shape[0] == 0:
        return torch.zeros((0, s, s), dtype=torch.bool, device=device)
    if rules == "paper":
        wh = (boxes[:, 2:] - boxes[:, :2]).double()
        c = torch.nan_to_num(centers.double())
        half = 0.5 * sigma * wh
        size = torch.tensor([image_size[1], image_size[0]], dtype=torch.float64, device=device)

        def cell(v):  # (G, 2) image (x, y) -> grid (column, row)
            return torch.floor(v / size * s).long()

    else:  # AdelaiDet computes these in float32, dividing by the cell size 1 / S
        wh = (boxes[:, 2:] - boxes[:, :2]).float()
        c = torch.nan_to_num(centers.float())
        half = 0.5 * wh * sigma
        size = torch.tensor([image_size[1], image_size[0]], dtype=torch.float32, device=device)

        def cell(v):
            return grid_cell(v, size, s)

    scale = (wh[:, 0] * wh[:, 1]).clamp(min=0).sqrt()
    valid = (scale >= scale_range[0]) & (scale <= scale_range[1]) & centers.isfinite().all(1)
    centre = cell(c)
    first = torch.maximum(cell(c - half).clamp(min=0), centre - 1)
    last = torch.minimum(cell(c + half).clamp(max=s - 1), centre + 1)
    ar = torch.arange(s, device=device)
    in_col = (ar >= first[:, :1]) & (ar <= last[:, :1])  # (G, S)
    in_row = (ar >= first[:, 1:]) & (ar <= last[:, 1:])
    return in_row[:, :, None] & in_col[:, None, :] & valid[:, None, None]


def solo_targets(
    gt_instances: List[Instances],
    masks: List[torch.Tensor],
    num_grids: Sequence[int],
    scale_ranges: Sequence[Sequence[float]],
    sigma: float,
    num_classes: int,
    rules: str = "paper",
) -> List[LevelTargets]:
    """Targets of every level for a batch.

    Args:
        gt_instances: per image, ``gt_boxes`` and ``gt_classes``.
        masks: per image, (G, H, W) padded masks (:func:`~instseg_d2.layers.instance_bitmasks`
            with ``pad_to``); (H, W) is the
            padded input size over which the grids are laid.
        rules: "paper" (one instance per cell) or "reference" (AdelaiDet's SOLOv2: every
            instance keeps every cell of its region, see :mod:`solo_d2.reference_rules`).

    Returns:
        one :class:`LevelTargets` per level.
    """
    out = []
    centers = [center_of_mass(m) if m.shape[0] else m.new_zeros((0, 2), dtype=torch.float32)
               for m in masks]  # fmt: skip
    for s, rng in zip(num_grids, scale_ranges):
        labels, pos = [], []
        for b, (inst, m) in enumerate(zip(gt_instances, masks)):
            boxes = inst.gt_boxes.tensor
            region = level_regions(boxes, centers[b], m.shape[-2:], s, rng, sigma, rules)
            lab, owner = _cell_owners(region, inst.gt_classes.to(boxes.device), num_classes)
            if rules == "paper":
                cells = torch.nonzero(owner.flatten() >= 0).squeeze(1)
                gts = owner.flatten()[cells]
            else:  # every (instance, cell) of the regions, by instance then cell
                gts, cells = torch.nonzero(region.flatten(1), as_tuple=True)
            pos.append(torch.stack([torch.full_like(cells, b), cells, gts], 1))
            labels.append(lab)
        out.append(LevelTargets(torch.stack(labels), torch.cat(pos)))
    return out


def rescale_masks(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(G, H, W) binary -> (G, h, w) binary, bilinear (``align_corners=False``) then >= 0.5.

    For an integer factor this samples the same points as the reference's cv2 INTER_LINEAR
    rescale of uint8 masks (round half up).
    """
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.bool)
    m = F.interpolate(masks[None].float(), size=tuple(size), mode="bilinear", align_corners=False)
    return m[0] >= 0.5


def mask_targets(pos: torch.Tensor, masks: List[torch.Tensor], size, cache: Dict) -> torch.Tensor:
    """(P, h, w) float mask targets of the positives ``pos`` (rows image, cell, gt) at ``size``.

    ``cache`` keeps each image's rescaled masks per size across levels.
    """
    out = torch.zeros((pos.shape[0], *size), device=pos.device)
    for b in torch.unique(pos[:, 0]).tolist():
        key = (b, tuple(size))
        if key not in cache:
            cache[key] = rescale_masks(masks[b], size)
        sel = pos[:, 0] == b
        out[sel] = cache[key][pos[sel, 2]].float()
    return out
