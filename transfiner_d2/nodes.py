"""How many quadtree nodes Mask Transfiner refines, and what an image costs.

    python -m transfiner_d2.nodes --config-file configs/Transfiner/shapes_Transfiner_R_18.yaml \
        --weights output/transfiner_shapes/model_final.pth [--num-images 3] [KEY VALUE ...]

Runs the model's inference on the first images of the config's test set (batch 1, the
test-time resize) and prints, per image, the wall time, the detections, the instances refined
and their nodes per quadtree level (28 / 56 / 112 for depth 3), then the means. The node count
sets the cost of the refinement: every instance's tokens (P x P context + its nodes) go through
the transformer together, so its attention grows with the square of that count.

``--gt-incoherence N`` also prints how much of the coarse grid the ground truth calls incoherent
(paper Eq. 1, with the config's downsampling, epsilon and RoI threshold): over the objects of
the first N test images, each cropped to its own box at 28 x 28, the mean share of incoherent
cells, overall and by box size. The level-0 nodes the trained predictor selects can be compared
with it.

``--gt-boxes N`` measures the refinement itself: the model's masks for the ground-truth boxes
and classes of the first N test images (so that detection plays no part), once refined and once
coarse (the 28 x 28 mask upsampled, as for the instances that are not refined), against the
ground truth cropped to the same boxes at the output size: mean absolute error of the
probabilities and mean mask IoU at 0.5, over all objects.
"""

import argparse
import itertools
import statistics
from typing import Dict

import torch
from detectron2.data import build_detection_test_loader
from detectron2.structures import Instances

from instseg_d2.data import InstanceDatasetMapper, annotated_test_batches
from instseg_d2.engine import build_config, load_model
from instseg_d2.layers import mask_iou_matrix
from transfiner_d2.targets import MaskTargets
from transfiner_d2.timing import measure_images

SIZE_BINS = ((0, 24), (24, 48), (48, float("inf")))  # box side in pixels (the longer one)


def gt_incoherent_share(targets, size: int, downsample: int, eps: float, thresh: float):
    """Share of incoherent cells of every GT object, cropped to its own box at size x size.

    Args:
        targets: per image, Instances with ``gt_masks`` (BitMasks).

    Returns:
        (M,) shares in [0, 1] and (M,) longer box sides in pixels.
    """
    shares, sides = [], []
    for t in targets:
        boxes = t.gt_masks.get_bounding_boxes()
        props = Instances(t.image_size, proposal_boxes=boxes, gt_index=torch.arange(len(t)))
        crops = MaskTargets([props], [t], downsample, eps).crop_incoherent(size, thresh)
        shares.append(crops.flatten(1).mean(1))
        sides.append((boxes.tensor[:, 2:] - boxes.tensor[:, :2]).max(1).values)
    return torch.cat(shares), torch.cat(sides)


def means_by_box_side(sides: torch.Tensor, *values: torch.Tensor) -> Dict[str, tuple]:
    """Mean of each of ``values`` (N,) over all objects and per ``SIZE_BINS`` of ``sides`` (N,).

    Returns:
        {"all" or "lo-hi": (objects, mean of values[0], mean of values[1], ...)}; a bin without
        objects is ``(0,)``.
    """
    out = {"all": (len(sides), *(v.mean().item() for v in values))}
    for lo, hi in SIZE_BINS:
        sel = (sides >= lo) & (sides < hi)
        n = int(sel.sum())
        out[f"{lo}-{hi}"] = (n, *(v[sel].mean().item() for v in values)) if n else (0,)
    return out


def print_gt_incoherence(cfg, name: str, num_images: int, size: int) -> dict:
    """The ground truth's incoherent share at ``size``, overall and per ``SIZE_BINS``."""
    batches = annotated_test_batches(cfg, name, num_images)
    targets = [x["instances"] for batch in batches for x in batch if len(x["instances"])]
    tc = cfg.MODEL.TRANSFINER
    shares, sides = gt_incoherent_share(
        targets, size, tc.INCOHERENT_GT_DOWNSAMPLE, tc.INCOHERENT_GT_EPS, tc.INCOHERENT_ROI_THRESH
    )
    out = means_by_box_side(sides, shares)
    bins = [f"{k}: {v[1]:.3f} ({v[0]})" for k, v in out.items() if k != "all" and v[0]]
    print(f"ground truth, {len(shares)} objects: {out['all'][1]:.3f} of the {size}x{size} cells "
          "incoherent; by box side (px): " + ", ".join(bins))  # fmt: skip
    return out


def _box_iou_l1(probs: torch.Tensor, gt: torch.Tensor):
    """(N, S, S) probabilities and bool targets -> (N,) mask IoU at 0.5, (N,) mean |p - gt|."""
    iou = mask_iou_matrix(probs >= 0.5, gt.bool()).diagonal()
    return iou, (probs - gt.float()).abs().flatten(1).mean(1)


@torch.no_grad()
def refinement_vs_coarse(model, batches) -> dict:
    """Refined and coarse masks of the GT boxes (see the module docstring).

    Returns:
        {"refined" / "coarse": (mean IoU, mean absolute error)} and "objects".
    """
    heads = model.roi_heads
    cap, ious = heads.test_max_instances, {"refined": [], "coarse": []}
    errs = {k: [] for k in ious}
    try:
        for batch in batches:
            gt = batch[0]["instances"]
            if not len(gt):
                continue
            features = model.backbone(model.preprocess_image(batch).tensor)
            size = tuple(batch[0]["image"].shape[-2:])
            for kind, max_inst in (("refined", len(gt)), ("coarse", 0)):
                heads.test_max_instances = max_inst
                det = Instances(size, pred_boxes=gt.gt_boxes, pred_classes=gt.gt_classes)
                probs = heads.forward_with_given_boxes(features, [det])[0].pred_masks[:, 0]
                target = gt.gt_masks.crop_and_resize(gt.gt_boxes.tensor, probs.shape[-1])
                iou, err = _box_iou_l1(probs, target)
                ious[kind].append(iou)
                errs[kind].append(err)
    finally:
        heads.test_max_instances = cap
    out = {k: (torch.cat(ious[k]).mean().item(), torch.cat(errs[k]).mean().item()) for k in ious}
    out["objects"] = len(torch.cat(ious["coarse"]))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help='"": random initialisation')
    p.add_argument("--num-images", type=int, default=3, help="0: time no image")
    p.add_argument("--gt-incoherence", type=int, default=0, metavar="N")
    p.add_argument("--gt-boxes", type=int, default=0, metavar="N")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = build_config(args.config_file, ["MODEL.WEIGHTS", args.weights] + list(args.opts))
    cfg.freeze()
    if cfg.MODEL.ROI_MASK_HEAD.NAME != "TransfinerMaskHead":
        raise SystemExit(f"{args.config_file}: MODEL.ROI_MASK_HEAD.NAME is not TransfinerMaskHead")
    model = load_model(cfg, args.weights)
    refiner = model.roi_heads.mask_head.refiner
    name = cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, name, mapper=InstanceDatasetMapper(cfg, False))
    rows = []
    for i, m in enumerate(measure_images(model, itertools.islice(loader, args.num_images))):
        per_inst = [n / max(m["refined"], 1) for n in m["nodes"]]
        rows.append((m["wall_s"], m["detections"], m["refined"], per_inst))
        print(f"image {i}: {m['wall_s']:.1f} s, {m['detections']} detections, {m['refined']} "
              f"refined, nodes per refined instance by level {[round(n) for n in per_inst]}")  # fmt: skip
    if rows:
        levels = [statistics.mean(r[3][k] for r in rows) for k in range(refiner.depth)]
        print(
            f"{name}, {len(rows)} images: {statistics.mean(r[0] for r in rows):.1f} s/image, "
            f"{statistics.mean(r[2] for r in rows):.1f} instances refined per image, nodes per "
            f"refined instance by level {[round(n) for n in levels]} (sum {round(sum(levels))})"
        )
    if args.gt_incoherence:
        coarse = 2 * cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION  # level 0: the coarse mask
        print_gt_incoherence(cfg, name, args.gt_incoherence, coarse)
    if args.gt_boxes:
        res = refinement_vs_coarse(model, annotated_test_batches(cfg, name, args.gt_boxes))
        print(
            f"GT boxes of {args.gt_boxes} images ({res['objects']} objects), masks against "
            "the GT cropped to the boxes: mask IoU / mean absolute error: refined "
            "{:.4f} / {:.4f}, coarse {:.4f} / {:.4f}".format(*res["refined"], *res["coarse"])
        )
    return rows


if __name__ == "__main__":
    main()
