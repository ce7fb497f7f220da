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
    offset = stride // 2 if offset is None else offset
    if stride < 1 or not 0 <= offset < stride:
        raise ValueError(f"instance_bitmasks: need stride >= 1 and 0 <= offset < stride, got "
                         f"stride {stride}, offset {offset}")  # fmt: skip
    if polygons_at_stride and pad_to is None:
        raise ValueError("instance_bitmasks: polygons_at_stride needs pad_to (the grid's size)")
    device = instances.gt_boxes.device if instances.has("gt_boxes") else masks.device
    if polygons_at_stride and isinstance(masks, PolygonMasks):
        grid = (-(-(pad_to[0] - offset) // stride), -(-(pad_to[1] - offset) // stride))
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
    if stride > 1:
        m = m[:, offset::stride, offset::stride]
    return m
