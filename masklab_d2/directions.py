"""Direction geometry of MaskLab: the (angle sector, distance ring) bin of a location seen from a
box centre, and direction pooling (the paper's assembling of the direction channels per box).

Conventions (the paper leaves them open; the same definition serves the targets and the pooling):

- Angle: ``atan2(dy, dx)`` of the offset from the box centre to the location, in image
  coordinates (x right, y down), taken in [0, 2 pi); sector ``d = floor(angle / (2 pi / D))``, so
  sector 0 is [0, 45) degrees from +x turning towards +y (clockwise on screen) for D = 8. The
  direction *towards* the centre is the opposite one, a fixed relabelling of the channels.
- Distance: ``r = ||(dx / (w / 2), dy / (h / 2))||`` (1 on the ellipse inscribed in the box);
  ring ``b = min(floor(r * B / max_distance), B - 1)``.
- Channel of bin (d, b): ``d * B + b`` (B = number of distance bins).
"""

import math

import torch


def direction_bin(
    dx: torch.Tensor,
    dy: torch.Tensor,
    half_w: torch.Tensor,
    half_h: torch.Tensor,
    num_directions: int = 8,
    num_distance_bins: int = 4,
    max_distance: float = 1.0,
) -> torch.Tensor:
    """Direction channel index of locations at offset ``(dx, dy)`` from a box centre.

    All tensor arguments broadcast together (e.g. ``dx`` (R, S, S) and ``half_w`` (R, 1, 1)).

    Args:
        dx, dy: offsets from the box centre, image units.
        half_w, half_h: half width / height of the box (> 0), image units.
        num_directions: D, angle sectors of 2 pi / D.
        num_distance_bins: B, distance rings.
        max_distance: normalised radius covered by the B rings.

    Returns:
        int64 tensor of channel indices in [0, D * B).
    """
    angle = torch.atan2(dy, dx)
    angle = torch.where(angle < 0, angle + 2 * math.pi, angle)
    sector = torch.floor(angle * (num_directions / (2 * math.pi))).long()
    sector = sector.clamp(0, num_directions - 1)
    r = torch.sqrt((dx / half_w) ** 2 + (dy / half_h) ** 2)
    ring = torch.floor(r * (num_distance_bins / max_distance)).long()
    ring = ring.clamp(0, num_distance_bins - 1)
    return sector * num_distance_bins + ring


def crop_direction_bins(
    boxes: torch.Tensor,
    crop_size: int,
    num_directions: int = 8,
    num_distance_bins: int = 4,
    max_distance: float = 1.0,
) -> torch.Tensor:
    """Direction channel of every cell of the ``crop_size`` x ``crop_size`` crop of each box.

    Cell (i, j) of a crop samples the box at ``(x0 + (j + 0.5) w / S, y0 + (i + 0.5) h / S)``
    (ROIAlign with ``aligned=True``), i.e. at offset ``(((j + 0.5) / S - 0.5) w, ...)`` from the
    centre. The angle depends on the box's aspect ratio, the normalised radius does not.

    Args:
        boxes: (R, 4) boxes ``(x0, y0, x1, y1)``.
        crop_size: S.

    Returns:
        (R, S, S) int64 channel indices.
    """
    t = (torch.arange(crop_size, device=boxes.device, dtype=torch.float32) + 0.5) / crop_size - 0.5
    w = (boxes[:, 2] - boxes[:, 0]).float().clamp(min=1e-6)[:, None, None]
    h = (boxes[:, 3] - boxes[:, 1]).float().clamp(min=1e-6)[:, None, None]
    dx = t[None, None, :] * w  # (R, 1, S)
    dy = t[None, :, None] * h  # (R, S, 1)
    return direction_bin(
        dx, dy, w / 2, h / 2, num_directions, num_distance_bins, max_distance
    )  # broadcasts to (R, S, S)


def direction_pooling(
    direction_crops: torch.Tensor,
    boxes: torch.Tensor,
    num_directions: int = 8,
    num_distance_bins: int = 4,
    max_distance: float = 1.0,
) -> torch.Tensor:
    """Assemble the direction channels of each box crop: every cell takes the channel of its bin.

    One gather over all boxes at once (the position-sensitive assembling of FCIS / InstanceFCN
    with (angle, distance) bins instead of a grid).

    Args:
        direction_crops: (R, D * B, S, S) crops of the direction logits, one per box.
        boxes: (R, 4) the boxes the crops were taken from, image units.

    Returns:
        (R, 1, S, S) assembled direction logits.
    """
    r, c, s, s2 = direction_crops.shape
    if c != num_directions * num_distance_bins or s != s2:
        raise ValueError(
            f"direction_pooling: crops of shape {tuple(direction_crops.shape)} do not match "
            f"{num_directions} directions x {num_distance_bins} distance bins on square crops"
        )
    index = crop_direction_bins(boxes, s, num_directions, num_distance_bins, max_distance)
    return torch.gather(direction_crops, 1, index[:, None])
