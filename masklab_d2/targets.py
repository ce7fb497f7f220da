"""Training targets of MaskLab, all built from ground-truth instances (boxes, classes, masks)."""

from typing import List, Tuple

import torch
from detectron2.structures import Instances

from instseg_d2.layers import instance_bitmasks

from .directions import direction_bin


def masks_on_grid(
    gt_masks, image_size: Tuple[int, int], stride: int, grid_hw: Tuple[int, int]
) -> torch.Tensor:
    """Sample instance masks at the cell centres ``((j + 0.5) s, (i + 0.5) s)`` of a stride-s map.

    Args:
        gt_masks: BitMasks (R, h, w) or PolygonMasks of an image of size ``image_size``.
        grid_hw: (H, W) of the (padded) feature map; cells outside the image are empty.

    Returns:
        (R, H, W) bool.
    """
    hf, wf = grid_hw
    instances = Instances(tuple(image_size), gt_masks=gt_masks)
    # Polygons scaled by 1 / s are rasterised on the grid: each cell decided around its centre.
    return instance_bitmasks(
        instances, pad_to=(hf * stride, wf * stride), stride=stride, polygons_at_stride=True
    )


def dense_targets(
    instances: List[Instances],
    grid_hw: Tuple[int, int],
    stride: int,
    num_classes: int,
    num_directions: int = 8,
    num_distance_bins: int = 4,
    max_distance: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-location targets of the semantic and direction logits (-1: ignored).

    A location (cell centre) belongs to the instance whose mask covers it (the smallest one where
    masks overlap). Semantic target: that instance's class; ``num_classes`` (background) for
    locations inside some ground-truth box but on no instance; ignored outside every box (the
    branches are trained with ground-truth boxes only). Direction target: the (direction,
    distance) bin of the location seen from its instance's box centre; ignored off instances.

    Args:
        instances: per image, with ``gt_boxes``, ``gt_classes``, ``gt_masks``.
        grid_hw: (H, W) of the dense logits; ``stride`` their stride.

    Returns:
        semantic (N, H, W) int64 in {-1, 0..K}, direction (N, H, W) int64 in {-1, 0..D*B-1}.
    """
    hf, wf = grid_hw
    sems, dirs = [], []
    for inst in instances:
        boxes = inst.gt_boxes.tensor
        dev = boxes.device
        sem = torch.full((hf, wf), -1, dtype=torch.long, device=dev)
        dirt = torch.full((hf, wf), -1, dtype=torch.long, device=dev)
        if len(inst) > 0:
            masks = masks_on_grid(inst.gt_masks, inst.image_size, stride, grid_hw).to(dev)
            ys = (torch.arange(hf, device=dev, dtype=torch.float32) + 0.5) * stride
            xs = (torch.arange(wf, device=dev, dtype=torch.float32) + 0.5) * stride
            x0, y0, x1, y1 = (boxes[:, k, None, None] for k in range(4))
            in_box = (xs >= x0) & (xs < x1) & (ys[:, None] >= y0) & (ys[:, None] < y1)
            sem[in_box.any(dim=0)] = num_classes
            area = masks.flatten(1).sum(dim=1).float()
            inf = torch.tensor(float("inf"), device=dev)
            cost = torch.where(masks, area[:, None, None], inf)
            owner = cost.argmin(dim=0)  # (H, W)
            on_instance = masks.any(dim=0)
            bins = direction_bin(
                xs[None, None, :] - (x0 + x1) / 2,
                ys[None, :, None] - (y0 + y1) / 2,
                ((x1 - x0) / 2).clamp(min=1e-6),
                ((y1 - y0) / 2).clamp(min=1e-6),
                num_directions,
                num_distance_bins,
                max_distance,
            )  # (R, H, W)
            own_bin = torch.gather(bins, 0, owner[None])[0]
            sem = torch.where(on_instance, inst.gt_classes[owner], sem)
            dirt = torch.where(on_instance, own_bin, dirt)
        sems.append(sem)
        dirs.append(dirt)
    return torch.stack(sems), torch.stack(dirs)


def mask_crop_targets(instances: List[Instances], crop_size: int) -> torch.Tensor:
    """Ground-truth masks cropped to their boxes at ``crop_size`` x ``crop_size``: (R, S, S)."""
    out = [
        inst.gt_masks.crop_and_resize(inst.gt_boxes.tensor, crop_size).to(torch.float32)
        for inst in instances
        if len(inst) > 0
    ]
    if not out:
        dev = instances[0].gt_boxes.device if instances else "cpu"
        return torch.zeros(0, crop_size, crop_size, device=dev)
    return torch.cat(out).to(instances[0].gt_boxes.device)
