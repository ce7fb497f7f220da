"""Losses of semi-convolutional Mask R-CNN: the embedding loss (eq. 5) and the kernel BCE."""

from typing import List, Optional

import torch
from detectron2.structures import Instances

from instseg_d2.layers import instance_bitmasks

from .kernel import embedding_distance

# log(1 - K) is clamped here where K -> 1 (a pixel at the seed's embedding)
_LOG_EPS = 1e-6


def instance_embedding_loss(psi: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Eq. 5 per instance: mean over u in S of ||Psi_u - mean_S Psi|| (distance NOT squared).

    Args:
        psi: (D, H, W) embeddings of one image at one level.
        masks: (K, H, W) bool instance masks at the same resolution; every mask non-empty.

    Returns:
        (K,) the loss of each instance.
    """
    k = masks.shape[0]
    inst, ys, xs = masks.nonzero(as_tuple=True)  # the pixels of every instance, (P,)
    e = psi[:, ys, xs].t()  # (P, D)
    count = masks.flatten(1).sum(dim=1).to(psi.dtype)  # (K,)
    mean = e.new_zeros(k, e.shape[1]).index_add_(0, inst, e) / count[:, None]  # (K, D)
    dist = embedding_distance(e, mean[inst])  # (P,)
    return dist.new_zeros(k).index_add_(0, inst, dist) / count


def masks_at_level(gt_masks, image_size, stride: int, level_size) -> torch.Tensor:
    """Ground-truth masks sampled at the cell centres of a level: cell (i, j) is in the mask
    when image pixel ``(i*stride + stride//2, j*stride + stride//2)`` is (cell-centre sampling,
    consistent with the position u of the cell).

    Args:
        gt_masks: BitMasks or PolygonMasks of the (unpadded) image, K masks.
        image_size: (h, w) of the image.
        stride: the level's stride.
        level_size: (H_l, W_l) of the level's (padded) feature map.

    Returns:
        (K, H_l, W_l) bool.
    """
    hl, wl = level_size
    instances = Instances(tuple(image_size), gt_masks=gt_masks)
    return instance_bitmasks(instances, pad_to=(hl * stride, wl * stride), stride=stride)


def embedding_loss(
    embeddings: List[torch.Tensor],
    strides: List[int],
    targets: List[Instances],
    levels: Optional[List[torch.Tensor]] = None,
) -> torch.Tensor:
    """Image-level embedding loss L(Psi | x, S) over a batch and the FPN levels.

    Every (instance, level) pair whose mask has at least one cell at that level contributes its
    eq.-5 value; the loss is their mean (0, with a graph, when there is none).

    Args:
        embeddings: one (N, D, H_l, W_l) map per level.
        strides: the stride of each level.
        targets: N Instances with ``gt_masks`` (of the image size ``targets[i].image_size``).
        levels: optional, per image a (K_i,) tensor giving the index into ``embeddings`` of the
            one level at which each instance is supervised; None supervises every level.

    Returns:
        scalar tensor.
    """
    total = sum(e.sum() for e in embeddings) * 0.0
    values = []
    for i, target in enumerate(targets):
        if len(target) == 0:
            continue
        for l, (emb, stride) in enumerate(zip(embeddings, strides)):
            masks = masks_at_level(target.gt_masks, target.image_size, stride, emb.shape[2:])
            masks = masks.to(emb.device)
            keep = masks.flatten(1).any(dim=1)
            if levels is not None:
                keep &= levels[i].to(emb.device) == l
            if keep.any():
                values.append(instance_embedding_loss(emb[i], masks[keep]))
    if not values:
        return total
    return total + torch.cat(values).mean()


def kernel_bce_loss(log_kernel: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """BCE between the kernel output K = exp(log K) and the ground-truth mask, mean over bins.

    ``-[y log K + (1 - y) log(1 - K)]``, computed from log K: log(1 - K) = log(-expm1(log K)),
    clamped at log(1e-6).

    Args:
        log_kernel: (R, M, M) log K_sigma(u_s, u).
        gt_masks: (R, M, M) targets in [0, 1].

    Returns:
        scalar tensor (0 with a graph when R = 0).
    """
    if log_kernel.numel() == 0:
        return log_kernel.sum() * 0.0
    y = gt_masks.to(log_kernel.dtype)
    log_1mk = torch.log(torch.clamp(-torch.expm1(log_kernel), min=_LOG_EPS))
    return -(y * log_kernel + (1.0 - y) * log_1mk).mean()
