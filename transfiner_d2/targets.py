"""Training targets of Mask Transfiner: RoI masks at every quadtree level, incoherent regions,
boundaries and the P2 foreground map.

Masks are cropped from each image's ground-truth instances (``targets[i].gt_masks``, BitMasks at
the image size) through the ``gt_index`` of every proposal, so the full-resolution maps are
computed once per ground-truth instance, not once per proposal.
"""

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from detectron2.layers import ROIAlign
from detectron2.structures import Instances

from instseg_d2.layers import instance_bitmasks


def incoherent_maps(masks: torch.Tensor, downsample: int = 2, eps: float = 0.01) -> torch.Tensor:
    """Incoherent-region maps of full-resolution masks (paper Eq. 1), at 1/downsample size.

    ``|M - up(down(M))|`` (bilinear both ways, ``down`` to ``floor(H/s) x floor(W/s)``) is
    taken down again to ``floor(H/s) x floor(W/s)``; values ``>= eps`` become 1, smaller ones
    are kept (as the reference does; they only matter through the RoI threshold).

    Args:
        masks: (G, H, W) binary masks.

    Returns:
        (G, H // downsample, W // downsample) float maps in [0, 1].
    """
    m = masks[:, None].float()
    h, w = m.shape[-2:]
    small_size = (h // downsample, w // downsample)
    small = F.interpolate(m, small_size, mode="bilinear", align_corners=False)
    recovered = F.interpolate(small, (h, w), mode="bilinear", align_corners=False)
    residue = (m - recovered).abs()
    out = F.interpolate(residue, small_size, mode="bilinear", align_corners=False)[:, 0]
    return torch.where(out >= eps, torch.ones_like(out), out)


def roi_crops(
    maps: torch.Tensor, gt_index: torch.Tensor, boxes: torch.Tensor, size: int, scale: float = 1.0
) -> torch.Tensor:
    """RoIAlign (aligned, adaptive sampling) of ``maps[gt_index[i]]`` in ``boxes[i]``.

    Args:
        maps: (G, H, W) float maps of one image.
        gt_index: (N,) index into ``maps`` of each RoI.
        boxes: (N, 4) boxes in image coordinates.
        size: output side.
        scale: map pixels per image pixel (1 / downsample for the incoherent maps).

    Returns:
        (N, size, size) float.
    """
    rois = torch.cat([gt_index[:, None].to(boxes.dtype), boxes], dim=1)
    return ROIAlign((size, size), scale, 0, aligned=True)(maps[:, None].float(), rois)[:, 0]


def boundary_map(masks: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Contour of binary masks: dilation XOR erosion with a 3x3 cross, ``width`` times each.

    As skimage's ``binary_dilation`` / ``binary_erosion`` (the reference), the erosion treats
    pixels outside the map as foreground, the dilation as background.

    Args:
        masks: (N, S, S) binary masks.

    Returns:
        (N, S, S) bool: ``width`` pixels outside and ``width`` inside each edge.
    """
    m = masks.bool()
    outer, inner = m, m
    for _ in range(width):
        outer = _cross_filter(outer, pad_value=False, op=torch.logical_or)
        inner = _cross_filter(inner, pad_value=True, op=torch.logical_and)
    return outer & ~inner


def _cross_filter(m: torch.Tensor, pad_value: bool, op) -> torch.Tensor:
    p = F.pad(m.to(torch.uint8), (1, 1, 1, 1), value=int(pad_value)).bool()
    out = p[:, 1:-1, 1:-1]
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        out = op(out, p[:, dy : dy + m.shape[1], dx : dx + m.shape[2]])
    return out


def semantic_targets(targets: List[Instances], size: Sequence[int], stride: int) -> torch.Tensor:
    """Foreground map (union of all instances) of each image at the size of P2.

    The masks are padded (bottom/right, like the image batch) to ``size * stride`` and
    nearest-downsampled to ``size`` (pixel ``(i * stride, j * stride)`` for cell (i, j)).

    Returns:
        (B, 1, h, w) float in {0, 1}.
    """
    h, w = size
    out = []
    for t in targets:
        if h * stride < t.image_size[0] or w * stride < t.image_size[1]:
            raise ValueError(
                f"semantic target: image {tuple(t.image_size)} larger than the feature map "
                f"{(h, w)} x stride {stride}"
            )
        masks = instance_bitmasks(t, pad_to=(h * stride, w * stride), stride=stride, offset=0)
        out.append(masks.any(dim=0)[None, None].float())
    return torch.cat(out, dim=0)


class MaskTargets:
    """Crops of the ground truth of a batch's fg proposals (concatenated over images).

    The GT masks of all images are padded to a common size and stacked, so one RoIAlign with
    the proposals' global GT index crops any subset of proposals at any size. The incoherent
    maps are computed per image at its own size (as the reference) and stacked the same way.

    Args:
        instances: fg proposals per image, with ``proposal_boxes`` and ``gt_index`` (the index
            of the matched instance in that image's ``targets``).
        targets: GT instances per image, with ``gt_masks`` (BitMasks).
        downsample, eps: see :func:`incoherent_maps`.
    """

    def __init__(self, instances: List[Instances], targets: List[Instances], downsample, eps):
        masks = [instance_bitmasks(t) for t in targets]
        h = max(m.shape[1] for m in masks)
        w = max(m.shape[2] for m in masks)
        self.masks = torch.cat([_pad_to(m.float(), h, w) for m in masks])
        inc = [incoherent_maps(m, downsample, eps) for m in masks]
        self.incoherent_maps = torch.cat(
            [_pad_to(m, h // downsample, w // downsample) for m in inc]
        )
        offsets = [0]
        for m in masks[:-1]:
            offsets.append(offsets[-1] + len(m))
        self.gt_index = torch.cat([x.gt_index + o for x, o in zip(instances, offsets)])
        self.boxes = torch.cat([x.proposal_boxes.tensor for x in instances])
        self.downsample = downsample

    def crop_masks(self, size: int, inds: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(N, size, size) float {0, 1}: GT masks cropped to the RoIs (>= 0.5, as Mask R-CNN).

        ``inds`` selects a subset of the RoIs (default: all).
        """
        gt_index, boxes = (self.gt_index, self.boxes) if inds is None else (
            self.gt_index[inds], self.boxes[inds])  # fmt: skip
        return (roi_crops(self.masks, gt_index, boxes, size) >= 0.5).float()

    def crop_incoherent(self, size: int, thresh: float) -> torch.Tensor:
        """(N, size, size) float {0, 1}: incoherent maps cropped to the RoIs, >= ``thresh``."""
        crops = roi_crops(
            self.incoherent_maps, self.gt_index, self.boxes, size, 1 / self.downsample
        )
        return (crops >= thresh).float()


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))
