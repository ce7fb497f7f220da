"""FCOS inference: threshold, top-k per level, decode, class-aware NMS, top-k per image."""

from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances


@torch.jit.script_if_tracing
def top_candidates(scores: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest ``scores`` (in no particular order) and their indices, or all of them
    with ``arange`` indices when there are at most ``k`` (scripted when traced: the count
    depends on the image)."""
    if scores.shape[0] > k:
        top = scores.topk(k, sorted=False)
        return top[0], top[1]
    return scores, torch.arange(scores.shape[0], device=scores.device)


def decode_level(
    locations: torch.Tensor,
    logits: torch.Tensor,
    reg: torch.Tensor,
    ctrness: torch.Tensor,
    stride: int,
    top_feat: Optional[torch.Tensor],
    score_thresh: float,
    pre_nms_topk: int,
    thresh_with_ctr: bool,
) -> List[dict]:
    """Candidates of one level for every image.

    Args:
        locations: (H*W, 2); logits (N, C, H, W); reg (N, 4, H, W) in stride units;
        ctrness (N, 1, H, W); top_feat (N, D, H, W) or None.

    Returns:
        per image a dict of ``boxes`` (K, 4) XYXY, ``scores`` sqrt(cls * ctr) (K,),
        ``classes``, ``locations`` (K, 2) and ``top_feat`` (K, D) if given.
    """
    n, c = logits.shape[:2]
    cls = logits.permute(0, 2, 3, 1).reshape(n, -1, c).sigmoid()
    reg = reg.permute(0, 2, 3, 1).reshape(n, -1, 4) * stride
    ctr = ctrness.permute(0, 2, 3, 1).reshape(n, -1).sigmoid()
    if top_feat is not None:
        top_feat = top_feat.permute(0, 2, 3, 1).reshape(n, reg.shape[1], -1)
    scores = cls * ctr[:, :, None]
    candidates = (scores if thresh_with_ctr else cls) > score_thresh
    out = []
    for i in range(n):
        loc_idx, cls_idx = candidates[i].nonzero(as_tuple=True)
        s, keep = top_candidates(scores[i, loc_idx, cls_idx], pre_nms_topk)
        loc_idx, cls_idx = loc_idx[keep], cls_idx[keep]
        loc, r = locations[loc_idx], reg[i, loc_idx]
        boxes = torch.stack(
            [loc[:, 0] - r[:, 0], loc[:, 1] - r[:, 1], loc[:, 0] + r[:, 2], loc[:, 1] + r[:, 3]],
            dim=1,
        )
        det = {"boxes": boxes, "scores": torch.sqrt(s), "classes": cls_idx, "locations": loc}
        if top_feat is not None:
            det["top_feat"] = top_feat[i, loc_idx]
        out.append(det)
    return out


def predict_instances(
    locations: List[torch.Tensor],
    logits: List[torch.Tensor],
    reg: List[torch.Tensor],
    ctrness: List[torch.Tensor],
    top_feats: List[torch.Tensor],
    strides: Sequence[int],
    image_sizes: List[Tuple[int, int]],
    score_thresh: float = 0.05,
    pre_nms_topk: int = 1000,
    nms_thresh: float = 0.6,
    post_nms_topk: int = 100,
    thresh_with_ctr: bool = False,
) -> List[Instances]:
    """Detections per image: ``pred_boxes`` (not clipped), ``scores``, ``pred_classes``,
    ``locations``, ``fpn_levels`` and, with a top module, ``top_feat`` (per-detection extra
    output, e.g. CondInst's dynamic filter parameters)."""
    per_level = [
        decode_level(
            locations[l], logits[l], reg[l], ctrness[l], strides[l],
            top_feats[l] if top_feats else None, score_thresh, pre_nms_topk, thresh_with_ctr,
        )
        for l in range(len(logits))
    ]  # fmt: skip
    results = []
    for i, size in enumerate(image_sizes):
        dets = [lvl[i] for lvl in per_level]
        merged = {k: torch.cat([d[k] for d in dets]) for k in dets[0]}
        levels = torch.cat([torch.full_like(d["classes"], l) for l, d in enumerate(dets)])
        keep = batched_nms(merged["boxes"], merged["scores"], merged["classes"], nms_thresh)
        if post_nms_topk > 0:
            keep = keep[:post_nms_topk]  # batched_nms returns indices by decreasing score
        inst = Instances(size)
        inst.pred_boxes = Boxes(merged["boxes"][keep])
        inst.scores = merged["scores"][keep]
        inst.pred_classes = merged["classes"][keep]
        inst.locations = merged["locations"][keep]
        inst.fpn_levels = levels[keep]
        if "top_feat" in merged:
            inst.top_feat = merged["top_feat"][keep]
        results.append(inst)
    return results
