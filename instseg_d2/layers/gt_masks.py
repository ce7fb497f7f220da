"""Ground-truth instance masks as one bool tensor: the conversion every method's targets start
from (polygons rasterised, padding to the batch, sampling at a feature map's stride)."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, Instances, PolygonMasks, polygons_to_bitmask


def instance_bitmasks(
    instances: Instances,
    *,
    pad_to: Optional[Tuple[int, int]] = None,
    stride: int = 1,
    offset: Optional[int] = None,
    polygons_at_stride: bool = False,
) -> torch.Tensor:
    """The masks of ``instances.gt_masks`` as one (G, H, W) bool tensor.

    BitMasks are taken as they are; PolygonMasks are rasterised at ``instances.image_size``.
    Then, in this order:

    * ``pad_to`` (H_p, W_p): zero-padded at the bottom and right (cropped where larger) to
      that size, e.g. the padded batch's;
    * ``stride`` s > 1: pixels ``offset + k s`` of rows and columns are kept (``offset``
      defaults to ``s // 2``: pixel ``floor((k + 0.5) s)``, the centre of cell k of a stride-s
      map; 0: the top-left pixel of each cell). The result has ``ceil((H_p - offset) / s)``
      rows, so ``pad_to=(h * s, w * s)`` gives exactly the (h, w) cells of a feature map.
    * ``polygons_at_stride``: PolygonMasks are instead rasterised directly on the cells (the
      polygons scaled by 1 / s, each cell decided by the rasteriser as a pixel of that size;
      cheaper, and not the same cells as sampling the full-resolution raster). Needs
      ``pad_to``; BitMasks are sampled as above.

    Returns:
        (G, H', W') bool, on the device of ``instances.gt_boxes`` when the instances have boxes,
        else of the masks (rasterised polygons: the CPU).

    Raises:
        TypeError: ``gt_masks`` is neither BitMasks nor PolygonMasks.
        ValueError: ``stride`` < 1, ``offset`` outside ``[0, stride)``, or
            ``polygons_at_stride`` without ``pad_to``.
    """
    masks = instances.gt_masks
    if not isinstance(masks, (BitMasks, PolygonMasks)):
        raise TypeError(f"gt_masks must be BitMasks or PolygonMasks, got {type(masks).__name__}")
    offset = _check_stride(stride, offset)
    if polygons_at_stride and pad_to is None:
        raise ValueError("instance_bitmasks: polygons_at_stride needs pad_to (the grid's size)")
    device = instances.gt_boxes.device if instances.has("gt_boxes") else masks.device
    if polygons_at_stride and isinstance(masks, PolygonMasks):
        grid = tuple(-(-(int(n) - offset) // stride) for n in pad_to)
        cells = [
            torch.from_numpy(polygons_to_bitmask([p / stride for p in polys], *grid))
            for polys in masks.polygons
        ]
        out = torch.stack(cells) if cells else torch.zeros(0, *grid)
        return out.to(device=device, dtype=torch.bool)
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, *instances.image_size)
    m = masks.tensor.to(device=device, dtype=torch.bool)
    if pad_to is not None:
        m = F.pad(m, (0, int(pad_to[1]) - m.shape[-1], 0, int(pad_to[0]) - m.shape[-2]))
    return sample_at_stride(m, stride, offset)


def sample_at_stride(
    masks: torch.Tensor, stride: int, offset: Optional[int] = None
) -> torch.Tensor:
    """The pixels ``offset + k * stride`` of the last two dimensions of ``masks`` (..., H, W):
    ``(..., ceil((H - offset) / stride), ceil((W - offset) / stride))``. ``offset`` defaults to
    ``stride // 2``, the centre pixel ``floor((k + 0.5) stride)`` of cell k of a stride-s map."""
    offset = _check_stride(stride, offset)
    return masks[..., offset::stride, offset::stride] if stride > 1 else masks


def _check_stride(stride: int, offset: Optional[int]) -> int:
    """``offset`` (default ``stride // 2``), checked: ``stride >= 1``, ``0 <= offset < stride``."""
    offset = stride // 2 if offset is None else offset
    if stride < 1 or not 0 <= offset < stride:
        raise ValueError(
            f"need stride >= 1 and 0 <= offset < stride, got stride {stride}, offset {offset}"
        )
    return offset
