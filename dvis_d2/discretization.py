"""Discretization of the real-valued label map into candidate segments (no gradient)."""

from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn.functional as F
from detectron2.config import configurable

from instseg_d2.layers import mask_iou_matrix

from .meanshift import connected_components, mean_shift_modes


@dataclass
class Candidates:
    """Candidate segments of one image, at label-map resolution (h, w).

    Attributes:
        masks: (N, h, w) bool.
        values: (N,) mean label value of each segment.
        bandwidths: (N,) index of the mean-shift bandwidth that produced it.
    """

    masks: torch.Tensor
    values: torch.Tensor
    bandwidths: torch.Tensor

    def __len__(self) -> int:
        return self.masks.shape[0]

    @staticmethod
    def cat(items: Sequence["Candidates"]) -> "Candidates":
        return Candidates(
            torch.cat([c.masks for c in items]),
            torch.cat([c.values for c in items]),
            torch.cat([c.bandwidths for c in items]),
        )


class Discretizer(torch.nn.Module):
    """Mean-shift at each bandwidth, connected components, candidate filtering.

    For each bandwidth ``h``: mean-shift of the image's label values
    (:func:`mean_shift_modes`); pixels whose mode is >= ``fg_thresh`` are foreground; the
    4-connected components of each mean-shift cluster are segments; optionally the union of the
    disconnected segments of one cluster is one more segment (an occluded object in pieces).
    Segments smaller than ``min_area`` or thin (perimeter > ``perimeter_min`` and area /
    perimeter < ``area_perimeter_ratio``) are dropped and the ``num_keep`` largest kept. The
    candidates of all bandwidths are concatenated, and one whose mask IoU with an earlier
    candidate is >= ``dedup_iou`` is dropped as a duplicate.
    """

    @configurable
    def __init__(
        self,
        *,
        bandwidths: Sequence[float] = (0.9, 0.4),
        min_area: Sequence[int] = (20, 5),
        num_keep: Sequence[int] = (20, 40),
        fg_thresh: float = 1.0,
        bin_fraction: float = 0.05,
        max_value: float = 64.0,
        max_iters: int = 50,
        perimeter_min: int = 15,
        area_perimeter_ratio: float = 1.8,
        merge_disconnected: bool = True,
        dedup_iou: float = 0.9,
    ):
        super().__init__()
        n = len(bandwidths)
        if n == 0 or len(min_area) != n or len(num_keep) != n:
            raise ValueError(
                "MODEL.DVIS.MEANSHIFT.BANDWIDTHS, MIN_AREA and NUM_KEEP need one entry per "
                f"bandwidth, got {tuple(bandwidths)}, {tuple(min_area)}, {tuple(num_keep)}"
            )
        self.bandwidths = tuple(float(b) for b in bandwidths)
        self.min_area = tuple(int(a) for a in min_area)
        self.num_keep = tuple(int(k) for k in num_keep)
        self.fg_thresh = fg_thresh
        self.bin_fraction = bin_fraction
        self.max_value = max_value
        self.max_iters = max_iters
        self.perimeter_min = perimeter_min
        self.area_perimeter_ratio = area_perimeter_ratio
        self.merge_disconnected = merge_disconnected
        self.dedup_iou = dedup_iou

    @classmethod
    def from_config(cls, cfg):
        ms = cfg.MODEL.DVIS.MEANSHIFT
        return {
            "bandwidths": ms.BANDWIDTHS,
            "min_area": ms.MIN_AREA,
            "num_keep": ms.NUM_KEEP,
            "fg_thresh": ms.FG_THRESH,
            "bin_fraction": ms.BIN_FRACTION,
            "max_value": ms.MAX_VALUE,
            "max_iters": ms.MAX_ITERS,
            "perimeter_min": ms.PERIMETER_MIN,
            "area_perimeter_ratio": ms.AREA_PERIMETER_RATIO,
            "merge_disconnected": ms.MERGE_DISCONNECTED,
            "dedup_iou": ms.DEDUP_IOU,
        }

    @torch.no_grad()
    def segment(self, f: torch.Tensor, valid: torch.Tensor, bandwidth: float) -> torch.Tensor:
        """Segment ids of one bandwidth, batched.

        Args:
            f: (B, h, w) label map (>= 0); valid: (B, h, w) bool.

        Returns:
            ``(segments, clusters)``, (B, h, w) long each: segment ids (4-connected pixels of
            one mean-shift cluster, named as in :func:`connected_components`) and cluster ids,
            -1 on background and padding.
        """
        b, h, w = f.shape
        modes, clusters = mean_shift_modes(
            f.reshape(b, -1),
            valid.reshape(b, -1),
            bandwidth,
            self.bin_fraction,
            self.max_value,
            self.max_iters,
        )
        fg = (modes >= self.fg_thresh) & (clusters >= 0)
        clusters = torch.where(fg, clusters, torch.full_like(clusters, -1)).view(b, h, w)
        return connected_components(clusters), clusters

    @torch.no_grad()
    def forward(self, f: torch.Tensor, valid: torch.Tensor) -> List[Candidates]:
        """Candidates of every image.

        Args:
            f: (B, h, w) label map ``ReLU(z)``; valid: (B, h, w) bool.
        """
        per_bw = []
        for k, bw in enumerate(self.bandwidths):
            comps, clusters = self.segment(f, valid, bw)
            per_bw.append([self._filter(f[i], comps[i], clusters[i], k) for i in range(f.shape[0])])
        return [self._dedup(Candidates.cat([c[i] for c in per_bw])) for i in range(f.shape[0])]

    def _filter(self, f, comp, cluster, k: int) -> Candidates:
        """Segments of one image and one bandwidth, filtered and sorted by area."""
        h, w = comp.shape
        ids, inv, area = torch.unique(comp.reshape(-1), return_inverse=True, return_counts=True)
        fgc = ids >= 0
        total = torch.zeros_like(ids, dtype=torch.float32).index_add_(0, inv, f.reshape(-1).float())
        perim = torch.zeros_like(ids, dtype=torch.float32).index_add_(
            0, inv, _boundary(comp).reshape(-1).float()
        )
        ids, area, mean, perim = ids[fgc], area[fgc], (total / area)[fgc], perim[fgc]
        keep = area >= self.min_area[k]
        if self.area_perimeter_ratio > 0:
            thin = (perim > self.perimeter_min) & (area < self.area_perimeter_ratio * perim)
            keep &= ~thin
        ids, area, mean = ids[keep], area[keep], mean[keep]
        top = torch.argsort(area, descending=True)[: self.num_keep[k]]
        ids, area, mean = ids[top], area[top], mean[top]
        masks = comp[None] == ids[:, None, None]
        if self.merge_disconnected:  # (no-op without a cluster of several segments)
            cl = cluster.reshape(-1)[ids % (h * w)]  # cluster of each segment
            ucl, counts = torch.unique(cl, return_counts=True)
            multi = ucl[counts > 1]
            sel = (cl[None] == multi[:, None]).float()  # (U, N) segments of each cluster
            union_area = sel @ area.float()
            union_mean = (sel @ (mean * area)) / union_area
            unions = (sel @ masks.flatten(1).float()).view(sel.shape[0], h, w) > 0
            masks = torch.cat([masks, unions])
            area = torch.cat([area, union_area.to(area.dtype)])
            mean = torch.cat([mean, union_mean])
        order = torch.argsort(area, descending=True)[: self.num_keep[k]]
        return Candidates(masks[order], mean[order], torch.full_like(order, k))

    def _dedup(self, c: Candidates) -> Candidates:
        if self.dedup_iou > 1:
            return c
        iou = mask_iou_matrix(c.masks).triu(diagonal=1)  # iou[i, j] for i < j
        keep = ~(iou >= self.dedup_iou).any(dim=0)
        return Candidates(c.masks[keep], c.values[keep], c.bandwidths[keep])


def _boundary(comp: torch.Tensor) -> torch.Tensor:
    """(h, w) bool: segment pixels with a 4-neighbour outside their segment (or the map)."""
    p = F.pad(comp, (1, 1, 1, 1), value=-2)
    c = p[1:-1, 1:-1]
    diff = (p[:-2, 1:-1] != c) | (p[2:, 1:-1] != c) | (p[1:-1, :-2] != c) | (p[1:-1, 2:] != c)
    return diff & (comp >= 0)
