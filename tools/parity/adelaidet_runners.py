"""What tools/parity/adelaidet.py records of AdelaiDet's models, stage by stage.

Forward hooks on the reference's modules (and wrappers around a few of its methods that are no
modules' ``forward``) copy the intermediate results into plain dicts of tensors: the fixture.
"""

import types
from typing import Callable, Dict, List

import torch
from detectron2.structures import Boxes, Instances

from instseg_d2.parity import parity_batched_inputs as batched_inputs


# --------------------------------------------------------------------------------- capture
def _detach(x):
    if torch.is_tensor(x):
        return x.detach().clone()
    if isinstance(x, Boxes):
        return x.tensor.detach().clone()
    if isinstance(x, (list, tuple)):
        return [_detach(v) for v in x]
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


def _fields(inst: Instances, names: Dict[str, str]) -> Dict:
    """``{fixture name: field}`` of an Instances (Boxes as tensors), cloned."""
    return {new: _detach(inst.get(old)) for new, old in names.items() if inst.has(old)}


_DETECTION_FIELDS = {
    "boxes": "pred_boxes", "scores": "scores", "classes": "pred_classes",
    "locations": "locations", "fpn_levels": "fpn_levels", "top_feat": "top_feat",
}  # fmt: skip
_POSITIVE_FIELDS = {
    "pos_inds": "pos_inds", "gt_inds": "gt_inds", "labels": "labels",
    "reg_targets": "reg_targets", "gt_ctrs": "gt_ctrs", "top_feats": "top_feats",
}  # fmt: skip
_INSTANCE_FIELDS = {"boxes": "pred_boxes", "scores": "scores", "classes": "pred_classes"}


def _hook(module, store: Dict, key: str, fn: Callable = _detach):
    return module.register_forward_hook(lambda m, i, o: store.__setitem__(key, fn(o)))


def _wrap(obj, name: str, store: Dict, key: str, fn: Callable):
    """Replace the bound method ``obj.name`` by one that also records ``fn(args, result)``."""
    orig = getattr(obj, name)

    def wrapped(*args, **kwargs):
        out = orig(*args, **kwargs)
        store.setdefault(key, []).append(fn(args, out))
        return out

    setattr(obj, name, wrapped)
    return types.SimpleNamespace(remove=lambda: delattr(obj, name))


def _final_instances(outputs: List[Dict], masks: bool) -> List[Dict]:
    res = []
    for o in outputs:
        d = _fields(o["instances"], _INSTANCE_FIELDS)
        if masks:
            inst = o["instances"]
            d["masks"] = (
                inst.pred_masks.detach().bool().clone()
                if inst.has("pred_masks")
                else torch.zeros(0, *inst.image_size, dtype=torch.bool)
            )
        res.append(d)
    return res


def _fcos_head(out) -> Dict:
    logits, reg, ctrness, top_feats, _ = out
    return {"logits": _detach(logits), "reg": _detach(reg), "ctrness": _detach(ctrness)}


def _losses(losses: Dict) -> Dict:
    return {k: v.detach().clone() for k, v in sorted(losses.items())}


def _train_extras(out) -> Dict:
    extras, _ = out
    return {
        "positives": _fields(extras["instances"], _POSITIVE_FIELDS),
        "loss_denorm": float(extras["loss_denorm"]),
    }


# ---------------------------------------------------------------------------------- runners
def run_fcos_family(model, method: str, inputs: Dict) -> Dict:
    """FCOS, CondInst, BlendMask: inference (batched, except CondInst: one image at a time, as
    AdelaiDet's CondInst cannot batch images of different sizes) and one training forward."""
    pg = model.proposal_generator
    inf: Dict = {}
    hooks = [
        _hook(pg.fcos_head, inf, "head", _fcos_head),
        _hook(pg, inf, "detections", lambda o: [_fields(x, _DETECTION_FIELDS) for x in o[0]]),
    ]
    if method == "condinst":
        hooks.append(_hook(model.mask_branch, inf, "mask_feats", lambda o: _detach(o[0])))
        hooks.append(
            _wrap(model, "_forward_mask_heads_test", inf, "masks_net",
                  lambda a, o: _detach(o.get("pred_global_masks")) if len(o) else None)
        )  # fmt: skip
    if method == "blendmask":
        hooks.append(_hook(model.basis_module, inf, "bases", lambda o: _detach(o[0]["bases"][0])))
        hooks.append(_wrap(model.blender, "merge_bases", inf, "masks_net", lambda a, o: _detach(o)))

    model.eval()
    with torch.no_grad():
        if method == "condinst":
            parts = [_run_one(model, x, inf) for x in batched_inputs(inputs, training=False)]
            inf = {k: [p[k] for p in parts] for k in parts[0]}
        else:
            out = model(batched_inputs(inputs, training=False))
            inf["instances"] = _final_instances(out, masks=method != "fcos")
    if method == "blendmask":  # (R, S * S) logits of all images -> (R_i, 1, S, S) probabilities
        s = int(inf["masks_net"][0].shape[1] ** 0.5)
        n = [len(d["scores"]) for d in inf["detections"]]
        inf["masks_net"] = list(inf["masks_net"][0].sigmoid().reshape(-1, 1, s, s).split(n))
    for h in hooks:
        h.remove()

    train: Dict = {}
    hooks = [_hook(pg, train, "fcos", _train_extras)]
    if method == "condinst":
        hooks.append(_hook(model.mask_branch, train, "mask_feats", lambda o: _detach(o[0])))
        hooks.append(
            _wrap(model, "add_bitmasks", train, "gt_bitmasks",
                  lambda a, o: [_detach(x.gt_bitmasks) for x in a[0]])
        )  # fmt: skip
    if method == "blendmask":
        hooks.append(_hook(model.basis_module, train, "bases", lambda o: _detach(o[0]["bases"][0])))
    model.train()
    batch = batched_inputs(inputs, training=True)
    if method == "blendmask":
        for x in batch:
            x["basis_sem"] = thing_semantic_map(x["instances"])
    train["losses"] = _losses(model(batch))
    for h in hooks:
        h.remove()
    train.update(train.pop("fcos"))
    if method == "condinst":
        train["gt_bitmasks"] = train["gt_bitmasks"][0]
    return {"inference": inf, "training": train}


def _run_one(model, x: Dict, inf: Dict) -> Dict:
    inf.clear()
    out = model([x])
    res = {k: (v[0] if k in ("detections", "masks_net") else v) for k, v in inf.items()}
    res["instances"] = _final_instances(out, masks=True)[0]
    return res


def thing_semantic_map(instances: Instances) -> torch.Tensor:
    """AdelaiDet's ``basis_sem`` input (its datasets/prepare_thing_sem_from_instance.py): per
    pixel 1 + the class of the last instance (annotation order) covering it, 0 elsewhere."""
    out = torch.zeros(instances.image_size, dtype=torch.long)
    for m, c in zip(instances.gt_masks.tensor, instances.gt_classes):
        out[m] = int(c) + 1
    return out


def run_solov2(model, inputs: Dict) -> Dict:
    """SOLOv2: batched inference and one training forward; the training targets are recorded
    per level as rows (image, cell, gt) in the reference's order and their masks."""
    inf: Dict = {}
    hooks = [
        _hook(model.ins_head, inf, "head",
              lambda o: {"cate": _detach(o[0]), "kernels": _detach(o[1])}),
        _hook(model.mask_head, inf, "mask_feat"),
    ]  # fmt: skip
    model.eval()
    with torch.no_grad():
        out = model(batched_inputs(inputs, training=False))
    inf["instances"] = _final_instances(out, masks=True)
    for h in hooks:
        h.remove()
    inf["head"]["mask_feat"] = inf.pop("mask_feat")

    train: Dict = {}
    _wrap(model, "get_ground_truth", train, "targets", lambda a, o: _detach(o))
    model.train()
    batch = batched_inputs(inputs, training=True)
    train["losses"] = _losses(model(batch))
    train["targets"] = _solo_targets(train.pop("targets")[0], batch)
    return {"inference": inf, "training": train}


def _solo_targets(targets, batch) -> List[Dict]:
    """Per level: ``labels`` (N, S, S), ``rows`` (P, 3) = (image, cell, gt) in the reference's
    order and ``masks`` (P, h, w) bool. The reference records masks, not instance indices: the
    gt of a row is the instance whose rescaled mask (the reference's own rescale) it equals."""
    from adet.modeling.solov2.utils import imrescale

    ins_labels, cate_labels, _, grid_orders = targets
    out = []
    for level in range(len(cate_labels[0])):
        rows, masks = [], []
        for b, x in enumerate(batch):
            gt = x["instances"].gt_masks.tensor
            singles = [
                torch.from_numpy(imrescale(m.to(torch.uint8).numpy(), scale=0.25)).bool()
                for m in gt
            ]
            for cell, target in zip(grid_orders[b][level], ins_labels[b][level]):
                target = target.bool()
                hits = [
                    k
                    for k, s in enumerate(singles)
                    if torch.equal(target[: s.shape[0], : s.shape[1]], s)
                    and not target[s.shape[0] :].any()
                    and not target[:, s.shape[1] :].any()
                ]
                if len(hits) != 1:
                    raise SystemExit(f"SOLOv2 target of cell {cell} matches instances {hits}")
                rows.append([b, int(cell), hits[0]])
                masks.append(target)
        h, w = ins_labels[0][level].shape[-2:]
        out.append(
            {
                "labels": torch.stack([c[level] for c in cate_labels]).clone(),
                "rows": torch.tensor(rows, dtype=torch.int64).reshape(-1, 3),
                "masks": torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.bool),
            }
        )
    return out
