"""Watch FCOS's box branch train: which regression outputs are dead, and which way GIoU pushes.

    python -m instseg_d2.modeling.fcos.diagnostics collapse-probe --config-file configs/CondInst/shapes_CondInst_R_18.yaml \\
        --dataset blobs=data/blobs/annotations.json:data/blobs/images --seed 0 --iters 60 \\
        --output-dir probe/ci0 DATASETS.TRAIN "('blobs',)"
    # the same weights, batches and optimizer on AdelaiDet's model (a clone on PYTHONPATH):
    PYTHONPATH=<AdelaiDet clone> python -m instseg_d2.modeling.fcos.diagnostics collapse-probe --reference adelaidet \\
        --output-dir probe/ci0 --iters 60 [--init ours_40.pth --skip 41]

The first run seeds and builds the model as train_net.py does (``SEED``), saves its initial
weights (``init.pth``), its config (``config.yaml``) and its first ITERS training batches
(``batches.pth``) in OUTPUT_DIR, then trains on those batches with the project's optimizer and
LR schedule (what ``Trainer`` computes, without its hooks). ``--reference adelaidet`` builds
AdelaiDet's model from the same config keys, loads the same weights (``--init``, a file in
OUTPUT_DIR) and trains it on the same batches (``--skip K``: from batch K and iteration K's
learning rate, with fresh momentum; for either model). Weights are
saved at the ``--save`` iterations (``<side>_<iter>.pth``).

One json line per iteration in ``OUTPUT_DIR/<ours|adelaidet>.jsonl``: the losses; per side
(l, t, r, b) the fraction of P3 outputs of ``bbox_pred`` <= 0 (dead through the ReLU,
``dead_p3``) and of positive locations predicting 0 (``zero_pos``); ``zero_area``, the
fraction of positives whose box has no area; ``grad_bbox_pred``, the gradient norm on
``bbox_pred.weight`` and its relative change since the start (``bbox_pred_change``); the mean
P3 output per side before the ReLU (``mean_p3``); the GIoU gradient on the positives' live
sides, summed over the sides longer than their target (``push_down``, > 0: shortens) and
shorter (``push_up``, < 0); and ``tower_grad``, the gradient norm of each loss term on the last
conv of the box tower (shared by bbox_pred, centre-ness and a top module).
"""

import argparse
import json
import math
import os
import sys
import types

import torch

SIDES = ("l", "t", "r", "b")


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config-file", default="")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME=JSON:IMAGE_DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--reference", choices=["adelaidet"], default=None)
    p.add_argument("--init", default="init.pth", help="weights in OUTPUT_DIR to start from")
    p.add_argument("--skip", type=int, default=0, help="start at this saved batch")
    p.add_argument("--save", type=int, nargs="*", default=[], help="iterations to save weights at")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def tower_gradients(losses, head) -> dict:
    """Norm of each loss term's gradient on the last conv of FCOS's box tower (the features
    that bbox_pred, the centre-ness branch and a top module such as CondInst's controller
    share); call before the total loss is backpropagated."""
    conv = [m for m in head.bbox_tower if isinstance(m, torch.nn.Conv2d)][-1].weight
    out = {}
    for name, term in losses.items():
        (g,) = torch.autograd.grad(term, [conv], retain_graph=True, allow_unused=True)
        out[name] = 0.0 if g is None else round(float(g.norm()), 6)
    return out


def box_branch_record(it, losses, pre_p3, pos, head, w0) -> dict:
    """The json record of one iteration (see the module docstring). ``pre_p3``: bbox_pred's
    (N, 4, H, W) output on P3; ``pos``: the positives (``reg_pred`` with its gradient,
    ``reg_targets``); ``w0``: bbox_pred's initial weight."""
    pred, target = pos.reg_pred.detach(), pos.reg_targets
    grad = pos.reg_pred.grad if pos.reg_pred.grad is not None else torch.zeros_like(pred)
    live, longer = pred > 0, pred > target
    empty = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3]) == 0
    gw = head.bbox_pred.weight.grad
    return {
        "it": it,
        **{k: round(v.item(), 5) for k, v in losses.items()},
        "npos": len(pred),
        "dead_p3": _per_side((pre_p3 <= 0).float().mean((0, 2, 3))),
        "mean_p3": _per_side(pre_p3.mean((0, 2, 3))),
        "bbox_pred_change": round(float((head.bbox_pred.weight - w0).norm() / w0.norm()), 5),
        "zero_pos": _per_side((pred == 0).float().mean(0)) if len(pred) else None,
        "zero_area": round(float(empty.float().mean()), 3) if len(pred) else None,
        "grad_bbox_pred": 0.0 if gw is None else float(gw.norm()),
        "push_down": _per_side((grad * (live & longer)).sum(0), 5),
        "push_up": _per_side((grad * (live & ~longer)).sum(0), 5),
    }


def _per_side(x: torch.Tensor, digits: int = 3) -> dict:
    return {s: round(float(v), digits) for s, v in zip(SIDES, x)}


def train_and_log(cfg, model, batches, iters, log_file, save=(), start=0):
    """Train ``model`` on ``batches`` with the project's optimizer and LR schedule (from
    iteration ``start``'s learning rate; fresh momentum); one record per iteration to
    ``log_file``."""
    from detectron2.solver import build_lr_scheduler

    from instseg_d2.engine.optimizer import build_optimizer

    head = model.proposal_generator.fcos_head
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(start):
        scheduler.step()
    seen = {}

    def keep_p3(module, inputs, output):
        seen.setdefault("p3", output.detach())  # levels run in order: the first is P3

    def keep_positives(module, inputs, output):
        seen["pos"] = output[0]["instances"]  # (extras, losses) in both implementations
        seen["pos"].reg_pred.retain_grad()

    hooks = [head.bbox_pred.register_forward_hook(keep_p3),
             model.proposal_generator.register_forward_hook(keep_positives)]  # fmt: skip
    model.train()
    w0 = head.bbox_pred.weight.detach().clone()
    with open(log_file, "w") as f:
        for it in range(iters):
            seen.clear()
            losses = model(batches[it % len(batches)])
            total = sum(losses.values())
            optimizer.zero_grad()
            tower = tower_gradients(losses, head)
            total.backward()
            record = box_branch_record(it, losses, seen["p3"], seen["pos"], head, w0)
            f.write(json.dumps(dict(record, tower_grad=tower)) + "\n")
            f.flush()
            if it in save:
                torch.save(model.state_dict(), log_file.replace(".jsonl", f"_{it}.pth"))
            if not math.isfinite(float(total)):
                raise FloatingPointError(f"loss is {float(total)} at iteration {it}")
            optimizer.step()
            scheduler.step()
    for h in hooks:
        h.remove()


def project_model(args):
    from detectron2.modeling import build_model
    from detectron2.utils.env import seed_all_rng

    from instseg_d2.engine import Trainer, build_config
    from instseg_d2.engine.setup import register_datasets

    register_datasets(args.dataset)
    opts = ["SEED", str(args.seed), "DATASETS.TEST", "()", "DATALOADER.NUM_WORKERS", "0"]
    cfg = build_config(args.config_file, opts + list(args.opts))
    cfg.freeze()
    seed_all_rng(args.seed)  # as default_setup in train_net.py: the same model and batches
    model = build_model(cfg)
    if not os.path.isfile(os.path.join(args.output_dir, "init.pth")):
        with open(os.path.join(args.output_dir, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        torch.save(model.state_dict(), os.path.join(args.output_dir, "init.pth"))
        loader = iter(Trainer.build_train_loader(cfg))
        batches = [next(loader) for _ in range(args.iters + args.skip)]
        torch.save(batches, os.path.join(args.output_dir, "batches.pth"))
    return cfg, model


def adelaidet_model(args):
    """AdelaiDet's model for the saved config: every key it knows is copied (the project's
    keys keep AdelaiDet's names); its compiled ops and BoxInst's scikit-image are not needed."""
    for name in ("adet._C", "skimage", "skimage.color"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["skimage"].color = sys.modules["skimage.color"]
    from adet.config import get_cfg
    from detectron2.config import CfgNode
    from detectron2.modeling import build_model

    with open(os.path.join(args.output_dir, "config.yaml")) as f:
        ours = CfgNode.load_cfg(f)
    cfg = get_cfg()
    only_ours = copy_known_keys(ours, cfg)
    print("config keys AdelaiDet does not have:", only_ours)
    cfg.MODEL.DEVICE = "cpu"
    for k in ("OPTIMIZER", "BACKBONE_MULTIPLIER", "BETAS"):  # the project's optimizer keys
        cfg.SOLVER[k] = ours.SOLVER[k]
    return cfg, build_model(cfg)


def copy_known_keys(src, dst, prefix: str = "") -> list:
    """Set every key of ``src`` that ``dst`` has; return the names of the others."""
    from detectron2.config import CfgNode

    others = []
    for k, v in src.items():
        if k not in dst:
            others.append(prefix + k)
        elif isinstance(v, CfgNode) and isinstance(dst[k], CfgNode):
            others += copy_known_keys(v, dst[k], f"{prefix}{k}.")
        else:
            dst[k] = v
    return others


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.reference:
        cfg, model = adelaidet_model(args)
    else:
        cfg, model = project_model(args)
    state = torch.load(os.path.join(args.output_dir, args.init))
    res = model.load_state_dict(state, strict=False)
    print(f"loaded {args.init}: missing {res.missing_keys}, unexpected {res.unexpected_keys}")
    batches = torch.load(os.path.join(args.output_dir, "batches.pth"), weights_only=False)
    batches = batches[args.skip :] + batches[: args.skip]
    side = args.reference or "ours"
    tag = side if args.init == "init.pth" else f"{side}_from_{os.path.splitext(args.init)[0]}"
    train_and_log(cfg, model, batches, args.iters, os.path.join(args.output_dir, f"{tag}.jsonl"),
                  set(args.save), start=args.skip)  # fmt: skip
