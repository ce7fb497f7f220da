#!/usr/bin/env python
"""What a SparseInst checkpoint has learnt, measured on the queries that the bipartite matcher
assigns to the objects (the queries the losses train).

    python tools/sparseinst_match_stats.py --config-file configs/SparseInst/shapes_R_18_GIAM.yaml \
        --weights output/sparseinst_shapes/model_final.pth [--num-images 40] [KEY VALUE ...]

Runs the network (eval mode, test-time resize) on the first images of the config's test set,
matches its N predictions of each image to the GT objects with the model's own matcher
(dice^alpha x prob^beta, Hungarian), and prints, over the matched queries: the mean dice of
their mask with the object, the mean probability of the object's class, how often that class is
the query's most probable one (chance: 1 / K), the mean objectness; and for the unmatched queries
the mean of their highest class probability and their objectness. A model whose masks are good
but whose class accuracy is near chance, and whose matched and unmatched queries get similar
scores, cannot rank its detections: COCO AP stays low however good the masks are.
"""

import argparse
import statistics

import torch

from detectron2.data import build_detection_test_loader
from detectron2.data import transforms as T

from instseg_d2.data import InstanceDatasetMapper
from instseg_d2.engine import build_config, load_model
from instseg_d2.layers import dice_coefficient
from sparseinst_d2.loss import target_masks


def match_stats(model, batches) -> dict:
    """Per matched / unmatched query statistics (lists of floats) over ``batches`` (lists of
    mapped dicts with ``image`` and ``instances``)."""

    stats = {
        k: [] for k in ("dice", "p_class", "top1", "objectness", "unmatched_p", "unmatched_obj")
    }
    for batch in batches:
        images = model.preprocess_image(batch)
        out = model.predict(images.tensor)
        gt = [x["instances"].to(model.device) for x in batch]
        targets = target_masks(gt, images.tensor.shape[-2:], out["pred_masks"].shape[-2:])
        labels = [g.gt_classes for g in gt]
        indices = model.criterion.matcher(out["pred_masks"], out["pred_logits"], targets, labels)
        probs = out["pred_logits"].sigmoid()
        obj = out["pred_objectness"][..., 0].sigmoid()
        for b, (q, t) in enumerate(indices):
            cls = labels[b][t]
            stats["p_class"] += probs[b, q, cls].tolist()
            stats["top1"] += (probs[b, q].argmax(-1) == cls).float().tolist()
            stats["objectness"] += obj[b, q].tolist()
            dice = dice_coefficient(out["pred_masks"][b, q].sigmoid(), targets[b][t], eps=1e-6)
            stats["dice"] += dice.tolist()
            rest = torch.ones(probs.shape[1], dtype=torch.bool, device=probs.device)
            rest[q] = False
            stats["unmatched_p"] += probs[b, rest].max(-1).values.tolist()
            stats["unmatched_obj"] += obj[b, rest].tolist()
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--num-images", type=int, default=40)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = build_config(args.config_file, ["MODEL.WEIGHTS", args.weights] + list(args.opts))
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "SparseInst":
        raise SystemExit(f"{args.config_file}: MODEL.META_ARCHITECTURE is not SparseInst")
    model = load_model(cfg, args.weights)
    name = cfg.DATASETS.TEST[0]
    # the training mapper (it keeps the GT objects) with the test-time resize and no flip
    mapper = InstanceDatasetMapper(
        cfg,
        True,
        augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)],
    )
    loader = build_detection_test_loader(cfg, name, mapper=mapper)
    batches = []
    for i, batch in enumerate(loader):
        if i >= args.num_images:
            break
        batches.append(batch)
    with torch.no_grad():
        stats = match_stats(model, batches)
    k = cfg.MODEL.SPARSE_INST.DECODER.NUM_CLASSES
    n = len(stats["dice"])
    print(f"{name}: {len(batches)} images, {n} objects, {k} classes (chance top-1 {1 / k:.2f})")
    print(f"matched queries: mask dice {statistics.mean(stats['dice']):.3f}, p(class) "
          f"{statistics.mean(stats['p_class']):.3f}, class top-1 {statistics.mean(stats['top1']):.3f}"
          f", objectness {statistics.mean(stats['objectness']):.3f}")  # fmt: skip
    print(
        f"unmatched queries: max p(class) {statistics.mean(stats['unmatched_p']):.3f}, "
        f"objectness {statistics.mean(stats['unmatched_obj']):.3f}"
    )
    return stats


if __name__ == "__main__":
    main()
