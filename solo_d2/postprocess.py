"""SOLO inference: point NMS, candidate masks, maskness, Matrix NMS, resizing to the image."""

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from detectron2.config import configurable

from instseg_d2.layers import matrix_nms, point_nms, resize_maps
from instseg_d2.utils.profiling import stage


@dataclass
class SOLODetections:
    """Detections of one image: ``probs`` (K, H/4, W/4) mask probabilities on the padded
    input at stride 4, ``scores`` (K,), ``classes`` (K,), sorted by decreasing score."""

    probs: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


class SOLOPostProcessor:
    """Turn a SOLO head's outputs into at most ``max_per_img`` masks per image.

    1. ``point_nms`` on the sigmoid category scores of every level;
    2. candidates: (cell, class) pairs with score > ``score_thr``;
    3. their masks at stride 4 (computed once per distinct cell), binarised at ``mask_thr``;
       candidates whose binary mask has at most ``min_mask_areas[level]`` pixels are dropped;
    4. maskness rescoring: score *= mean probability inside the binary mask;
    5. the ``nms_pre`` best go through Matrix NMS; decayed scores < ``update_thr`` are dropped;
       the ``max_per_img`` best are kept.
    """

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        num_grids: Sequence[int],
        min_mask_areas: Sequence[float],
        point_nms_kernel: int = 2,
        score_thr: float = 0.1,
        mask_thr: float = 0.5,
        nms_pre: int = 500,
        nms_kernel: str = "gaussian",
        nms_sigma: float = 2.0,
        update_thr: float = 0.05,
        max_per_img: int = 100,
    ):
        if len(min_mask_areas) != len(num_grids):
            raise ValueError(
                f"MODEL.SOLO.MIN_MASK_AREAS has {len(min_mask_areas)} values for "
                f"{len(num_grids)} levels (MODEL.SOLO.NUM_GRIDS)"
            )
        if nms_kernel not in ("gaussian", "linear"):
            raise ValueError(f"MODEL.SOLO.NMS_KERNEL={nms_kernel!r}: expected gaussian or linear")
        self.num_classes = num_classes
        self.num_grids = list(num_grids)
        self.min_mask_areas = list(min_mask_areas)
        self.point_nms_kernel = point_nms_kernel
        self.score_thr = score_thr
        self.mask_thr = mask_thr
        self.nms_pre = nms_pre
        self.nms_kernel = nms_kernel
        self.nms_sigma = nms_sigma
        self.update_thr = update_thr
        self.max_per_img = max_per_img

    @classmethod
    def from_config(cls, cfg):
        s = cfg.MODEL.SOLO
        return {
            "num_classes": s.NUM_CLASSES,
            "num_grids": list(s.NUM_GRIDS),
            "min_mask_areas": list(s.MIN_MASK_AREAS),
            "point_nms_kernel": s.POINT_NMS_KERNEL,
            "score_thr": s.SCORE_THR,
            "mask_thr": s.MASK_THR,
            "nms_pre": s.NMS_PRE,
            "nms_kernel": s.NMS_KERNEL,
            "nms_sigma": s.NMS_SIGMA,
            "update_thr": s.UPDATE_THR,
            "max_per_img": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    def __call__(self, head, outputs: dict, b: int, mask_size: Tuple[int, int]) -> SOLODetections:
        """Detections of image ``b`` of the batch; masks at ``mask_size`` (stride 4)."""
        cate = outputs["cate"]
        dev = cate[0].device
        scores = torch.cat(
            [
                point_nms(c[b : b + 1].sigmoid(), self.point_nms_kernel)[0]
                .permute(1, 2, 0)
                .reshape(-1, self.num_classes)
                for c in cate
            ]
        )  # (sum S^2, C)
        sizes = torch.tensor([s * s for s in self.num_grids], device=dev)
        offsets = torch.cumsum(sizes, 0) - sizes
        level_of = torch.repeat_interleave(torch.arange(len(sizes), device=dev), sizes)
        cand = torch.nonzero(scores > self.score_thr)  # (K, 2): global cell, class
        cells, inv = torch.unique(cand[:, 0], return_inverse=True)  # sorted, so by level
        probs = []
        for lvl in range(len(self.num_grids)):  # every level, also without candidates (trace)
            c = cells[level_of[cells] == lvl] - offsets[lvl]
            idx = torch.full_like(c, b)
            probs.append(head.mask_probs(outputs, lvl, idx, c, out_size=mask_size).float())
        probs = torch.cat(probs)  # (U, h, w), one per distinct cell
        binary = probs > self.mask_thr
        areas = binary.sum((1, 2)).float()
        maskness = (probs * binary).sum((1, 2)) / areas.clamp(min=1)
        min_area = torch.tensor(self.min_mask_areas, device=dev, dtype=areas.dtype)
        keep = (areas > min_area[level_of[cells]])[inv]
        inv, classes = inv[keep], cand[keep, 1]
        score = scores[cand[keep, 0], classes] * maskness[inv]
        order = torch.argsort(score, descending=True, stable=True)[: self.nms_pre]
        inv, classes, score = inv[order], classes[order], score[order]
        with stage("matrix_nms"):
            score = matrix_nms(
                binary[inv], classes, score, self.nms_kernel, self.nms_sigma, areas[inv]
            )
        keep = torch.nonzero(score >= self.update_thr).squeeze(1)
        order = keep[torch.argsort(score[keep], descending=True, stable=True)][: self.max_per_img]
        return SOLODetections(probs[inv[order]], score[order], classes[order])


def masks_to_image(
    probs: torch.Tensor,
    input_size: Tuple[int, int],
    out_size: Tuple[int, int],
    mask_thr: float = 0.5,
) -> torch.Tensor:
    """Stride-4 probabilities on the padded input -> (K, *out_size) bool masks.

    Bilinear x4 to the padded input, crop to the image's input size ``input_size`` (h, w),
    bilinear to ``out_size`` (the original image size, or ``input_size`` for raw outputs),
    threshold at ``mask_thr``.
    """
    hf, wf = probs.shape[-2:]
    x = resize_maps(probs, (4 * hf, 4 * wf))[:, : input_size[0], : input_size[1]]
    if tuple(out_size) != tuple(input_size):
        x = resize_maps(x, tuple(out_size))
    return x > mask_thr
