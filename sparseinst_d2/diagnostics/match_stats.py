"""What a SparseInst checkpoint has learnt, measured on the queries that the bipartite matcher
assigns to the objects (the queries the losses train).

    python -m sparseinst_d2.diagnostics match-stats \
        --config-file configs/SparseInst/shapes_SparseInst_GIAM_R_18.yaml \
        --weights output/sparseinst_shapes/model_final.pth [--num-images 40] [KEY VALUE ...]

Runs the network (eval mode, test-time resize) on the first images of the config's test set,
matches its N predictions of each image to the GT objects with the model's own matcher
(dice^alpha x prob^beta, Hungarian), and prints, over the matched queries: the mean dice of
their mask with the object, the mean probability of the object's class, how often that class is
the query's most probable one (chance: 1 / K), the mean objectness; and for the unmatched queries
the mean of their highest class probability and their objectness. A model whose masks are good
but whose class accuracy is near chance, and whose matched and unmatched queries get similar
scores, cannot rank its detections: COCO AP stays low however good the masks are.

It also prints where the matched queries' instance activation maps look: the share of a map's
pooling weight (``A_bar``: sigmoid / sum, or softmax) that falls on the query's object, averaged over the G
maps of the query, and over the objects; next to it the share a uniform map would give (the
object's area fraction). The instance features are ``A_bar``-weighted means of the features, so a
share near the area fraction means they describe the whole image rather than the object.
Pass ``DATASETS.TEST "('shapes_train',)"`` to measure on training images.

``--probe N`` asks whether the features carry the class where the maps should look: every
object's feature is the mean of a feature map over the object (its mask, as pooling weights;
an oracle activation map), at four depths: the backbone's res3 and res5, the encoder output,
and the instance branch's convolutions (what the activation maps pool). A ridge classifier
(on standardised features, lambda 1) fitted on the objects of the first N images of
``DATASETS.TRAIN[0]`` classifies the objects of the measured images; its top-1 is printed per
depth. High probe accuracy with the model's own class top-1 near chance puts the fault on the
activation maps, not on the features. ``--backbone-weights PATH`` replaces the model's ResNet
by that of another checkpoint (e.g. a trained Mask R-CNN, ``--weights ""`` for the rest) to
probe its features the same way.
"""

import argparse
import statistics
from typing import Optional

import torch
import torch.nn.functional as F

from instseg_d2.data import annotated_test_batches
from instseg_d2.engine import build_config, load_model, load_resnet_state
from instseg_d2.layers import dice_coefficient

from ..loss import target_masks
from .maps import share_on_objects


def match_stats(model, batches) -> dict:
    """Per matched / unmatched query statistics (lists of floats) over ``batches`` (lists of
    mapped dicts with ``image`` and ``instances``)."""

    stats = {
        k: []
        for k in (
            "dice", "p_class", "top1", "objectness", "unmatched_p", "unmatched_obj",
            "iam_on_object", "object_area",
        )
    }  # fmt: skip
    branch = model.decoder.inst_branch
    for batch in batches:
        images = model.preprocess_image(batch)
        out = model.predict(images.tensor)
        gt = [x["instances"].to(model.device) for x in batch]
        targets = target_masks(gt, images.tensor.shape[-2:], out["pred_masks"].shape[-2:])
        labels = [g.gt_classes for g in gt]
        indices = model.criterion.matcher(out["pred_masks"], out["pred_logits"], targets, labels)
        probs = out["pred_logits"].sigmoid()
        obj = out["pred_objectness"][..., 0].sigmoid()
        iam = out["pred_iam"]  # (B, G*N, h, w), channel g*N + n: group g of query n
        weights = branch.normalize(iam).view(
            len(batch), branch.groups, branch.num_masks, *iam.shape[-2:]
        )
        for b, (q, t) in enumerate(indices):
            stats["iam_on_object"] += share_on_objects(weights[b][:, q], targets[b][t]).tolist()
            uniform = torch.full_like(weights[b][:1, q], 1.0 / iam.shape[-2:].numel())
            stats["object_area"] += share_on_objects(uniform, targets[b][t]).tolist()
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


def object_features(model, batches) -> tuple:
    """Per depth, (M, C) features of all objects of ``batches`` (mask-weighted means), and
    their (M,) classes. The feature maps are the outputs of the model's backbone, encoder and
    instance-branch convolutions in its forward pass, read by forward hooks."""
    feats, labels = {}, []
    outputs = {}
    parts = {
        "backbone": model.backbone,
        "encoder": model.encoder,
        "instance branch": model.decoder.inst_branch.convs,
    }
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
        for name, module in parts.items()
    ]
    try:
        for batch in batches:
            images = model.preprocess_image(batch)
            model.predict(images.tensor)
            maps = {
                "backbone res3": outputs["backbone"]["res3"],
                "backbone res5": outputs["backbone"]["res5"],
                "encoder": outputs["encoder"],
                "instance branch": outputs["instance branch"],
            }
            _pool_objects(model, batch, images, maps, feats, labels)
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels)


def _pool_objects(model, batch, images, maps, feats, labels) -> None:
    """Append each object's mask-weighted mean of every map of ``maps`` to ``feats[depth]``
    and its class to ``labels``."""
    gt = [x["instances"].to(model.device) for x in batch]
    masks = target_masks(gt, images.tensor.shape[-2:], images.tensor.shape[-2:])
    for b, m in enumerate(masks):
        labels.append(gt[b].gt_classes)
        for name, f in maps.items():
            w = F.interpolate(m[:, None], size=f.shape[-2:], mode="area")[:, 0].flatten(1)
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-6)
            feats.setdefault(name, []).append(w @ f[b].flatten(1).t())


def ridge_top1(x_fit, y_fit, x_test, y_test, num_classes: int, lam: float = 1.0) -> float:
    """Top-1 on (x_test, y_test) of a ridge regression to one-hot classes fitted on
    (x_fit, y_fit), features standardised with the fitting set's statistics."""
    mean, std = x_fit.mean(0), x_fit.std(0).clamp(min=1e-6)

    def design(x):
        x = (x - mean) / std
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1).double()

    a = design(x_fit)
    y = F.one_hot(y_fit, num_classes).double()
    w = torch.linalg.solve(a.t() @ a + lam * torch.eye(a.shape[1], dtype=a.dtype), a.t() @ y)
    return (design(x_test) @ w).argmax(-1).eq(y_test).float().mean().item()


def main(argv=None, prog: Optional[str] = None) -> dict:
    """Measure the command line's checkpoint, print the figures; return the statistics (lists
    of floats per quantity, and ``probe``: top-1 per depth with ``--probe``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--num-images", type=int, default=40)
    p.add_argument("--probe", type=int, default=0, metavar="N", help="see the description")
    p.add_argument("--backbone-weights", default="", metavar="PATH", help="see the description")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    cfg = build_config(args.config_file, ["MODEL.WEIGHTS", args.weights] + list(args.opts))
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "SparseInst":
        raise SystemExit(f"{args.config_file}: MODEL.META_ARCHITECTURE is not SparseInst")
    model = load_model(cfg, args.weights)
    if args.backbone_weights:
        state, _ = load_resnet_state(args.backbone_weights)
        model.backbone.load_state_dict(state, strict=True)
        print(f"backbone: the ResNet of {args.backbone_weights}")
    name = cfg.DATASETS.TEST[0]
    batches = annotated_test_batches(cfg, name, args.num_images)
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
    print(
        f"matched queries' activation maps: {statistics.mean(stats['iam_on_object']):.3f} of the "
        f"pooling weight on the object (a uniform map: {statistics.mean(stats['object_area']):.3f})"
    )
    if args.probe:
        fit_name = cfg.DATASETS.TRAIN[0]
        with torch.no_grad():
            x_fit, y_fit = object_features(model, annotated_test_batches(cfg, fit_name, args.probe))
            x_test, y_test = object_features(model, batches)
        stats["probe"] = {
            depth: ridge_top1(x_fit[depth], y_fit, x_test[depth], y_test, k) for depth in x_fit
        }
        print(f"probe fitted on {len(y_fit)} objects of {fit_name}, tested on {len(y_test)}:")
        for depth, top1 in stats["probe"].items():
            print(f"  {depth}: class top-1 {top1:.3f}")
    return stats
