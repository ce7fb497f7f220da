"""Upsampling that keeps pixel centres aligned with strided ground-truth sampling."""

from typing import Tuple

import torch
import torch.nn.functional as F


def aligned_bilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample by an integer ``factor`` so that output pixel centres stay aligned (CondInst).

    A feature at stride ``s`` sampled at ``s*i + s//2`` is upsampled to stride ``s/factor``
    whose pixel ``j`` sits at ``(s/factor)*j + (s/factor)//2``. Implemented as: replicate-pad
    right/bottom by 1, bilinear with ``align_corners=True`` to ``(factor*h+1, factor*w+1)``,
    replicate-pad left/top by ``factor//2``, crop to ``(factor*h, factor*w)``.

    Args:
        x: (N, C, H, W).
        factor: integer >= 1.

    Returns:
        (N, C, factor*H, factor*W).
    """
    if x.dim() != 4:
        raise ValueError(f"aligned_bilinear expects (N, C, H, W), got {tuple(x.shape)}")
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"aligned_bilinear: factor must be >= 1, got {factor}")
    if factor == 1:
        return x
    h, w = x.shape[2:]
    x = F.pad(x, pad=(0, 1, 0, 1), mode="replicate")
    x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
    x = F.pad(x, pad=(factor // 2, 0, factor // 2, 0), mode="replicate")
    return x[:, :, : factor * h, : factor * w]


def resize_maps(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of K maps as the K channels of one image.

    Args:
        x: (K, h, w); K may be 0.
        size: (H, W), ints or, in a trace, 0-dim tensors (kept dynamic).

    Returns:
        (K, H, W).
    """
    return _resize_maps(x, torch.stack([torch.as_tensor(s) for s in size]))


@torch.jit.script_if_tracing
def _resize_maps(x: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """:func:`resize_maps` with the size as a (2,) tensor; scripted when traced (K varies,
    and a size given as ints would be recorded as a constant)."""
    h, w = int(size[0]), int(size[1])
    if x.size(0) == 0:
        return x.new_zeros((0, h, w))
    return F.interpolate(x[None], size=[h, w], mode="bilinear", align_corners=False)[0]
