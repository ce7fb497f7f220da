"""DVIS's candidates, counted and timed: diagnostics run from the command line.

    python -m dvis_d2.diagnostics candidates --config-file configs/DVIS/shapes_DVIS_R_18.yaml \\
        --weights output/dvis_shapes/model_final.pth [--dataset shapes_val] [--num-images N] \\
        [--count-ops] [--extra-candidates N] [KEY VALUE ...]
    python -m dvis_d2.diagnostics step-cost --config-file configs/MaskRCNN/shapes_MaskRCNN_R_18.yaml \\
        --config-file configs/DVIS/shapes_DVIS_R_18.yaml --extra-candidates 60 [tools/step_cost.py's
        options]

``candidates``: the average number of candidates per image (paper Table 6: 4.15 on VOC, 14.83
on COCO) and the share of the operations spent in discretization and verification (paper:
about 2 %). It runs the model's inference on the config's test set (the test-time resize of the
config) and prints the mean, median and range of the number of candidates that the
discretization sends to the verification (after filtering and de-duplication), in total and
per mean-shift bandwidth, and the mean number of GT instances per image for comparison. With
``--count-ops`` the floating-point operations of every inference are counted per stage
(:func:`instseg_d2.utils.profiling.count_stage_ops`: matrix products and convolutions as 2 per
multiply-add, every other op one per output element) and the totals over the images are printed
with each stage's share: the label-map network (backbone + decoder), ``discretization``
(mean-shift, connected components, filters) and ``verification`` (RoIAlign, the CNN, scoring).

``ceiling``: the COCO AP of a perfect label map and a perfect verification, i.e. what the
stride of the label map allows: every GT instance of the test set becomes its own label-map
segment (``label_targets``: average-pooled over stride x stride cells, thresholded at 0.5,
painted largest first), is upsampled to the image by the model's own post-processing and scored
1 with its true class. No weights are read; the figure bounds every DVIS model of the config.

    python -m dvis_d2.diagnostics ceiling --config-file configs/DVIS/shapes_DVIS_R_18.yaml \
        [--dataset NAME] [--num-images N] [KEY VALUE ...]

``grad-norms``: which loss terms drive the shared features: for each weighted loss term, the
L2 norm of its gradient with respect to the backbone + FPN parameters that train, averaged over
``--num-batches`` training batches (the config's training loader and augmentation), for given
weights (``init``: as a training starts, the config's ``MODEL.WEIGHTS`` and random heads), e.g.
at the start and at the end of a training.

    python -m dvis_d2.diagnostics grad-norms --config-file configs/DVIS/shapes_DVIS_R_18.yaml \
        --weights output/dvis_shapes/model_final.pth [--num-batches 8] [KEY VALUE ...]

``step-cost``: ``tools/step_cost.py`` (the CPU cost of a training step, side by side) with, on
the DVIS configs, ``--extra-candidates N`` small rectangles added to each image's candidates,
so that the verification head's cost is measured at a realistic (mid-training) candidate count
without trained weights; the mean ``dvis/num_candidates`` is printed.

``--extra-candidates N`` (:func:`add_rectangle_candidates`) appends N rectangles to the output
of the model's discretizer through a forward hook, e.g. to count the verification of a config at
the paper's candidate count without trained weights (``--weights ""``: random initialisation).
The candidates are read from the discretizer's output by a forward hook too: nothing in the
model exists for these diagnostics.
"""

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.structures import Instances
from torch.utils.hooks import RemovableHandle

from instseg_d2.benchmark.step_cost_cli import (
    add_step_cost_arguments,
    parse_step_cost_args,
    run_step_costs,
)
from instseg_d2.data import InstanceDatasetMapper, annotated_test_batches
from instseg_d2.engine import build_coco_evaluator, build_config, load_model
from instseg_d2.layers import instance_bitmasks
from instseg_d2.utils.commands import run_command
from instseg_d2.utils.profiling import OUTSIDE, count_stage_ops

from .discretization import Candidates, Discretizer
from .targets import label_targets

CANDIDATES = "dvis/num_candidates"


def add_rectangle_candidates(discretizer: Discretizer, n: int, seed: int = 1) -> RemovableHandle:
    """Make ``discretizer`` append ``n`` small rectangles to every image's candidates.

    A freshly initialised DVIS model yields almost no candidates, mid-training it yields 20-40
    per image, and the verification head's cost grows with that number. Until the returned
    handle is removed, each call of ``discretizer`` returns, after the real candidates of each
    image, ``n`` axis-aligned rectangles of 3-8 x 3-8 label-map cells (value 1, bandwidth index
    0) placed by a generator seeded with ``seed`` at every call (the same rectangles each time).
    Not for training or evaluation runs.
    """

    def hook(module, inputs, output: List[Candidates]) -> List[Candidates]:
        f, valid = inputs
        gen = torch.Generator().manual_seed(seed)
        return [
            Candidates.cat([c, _rectangles(n, v.shape, gen, f.device)])
            for c, v in zip(output, valid)
        ]

    return discretizer.register_forward_hook(hook)


def _rectangles(n: int, size: Tuple[int, int], gen: torch.Generator, device) -> Candidates:
    """``n`` rectangles of 3-8 x 3-8 cells at random places of an (h, w) label map."""
    h, w = size
    masks = torch.zeros(n, h, w, dtype=torch.bool, device=device)
    for i in range(n):
        y0 = int(torch.randint(0, max(h - 8, 1), (1,), generator=gen))
        x0 = int(torch.randint(0, max(w - 8, 1), (1,), generator=gen))
        masks[i, y0 : y0 + 3 + i % 6, x0 : x0 + 3 + (i * 7) % 6] = True
    zeros = torch.zeros(n, dtype=torch.long, device=device)
    return Candidates(masks, zeros.float() + 1, zeros)


# ------------------------------------------------------------------------------- candidates
def candidates(argv: Sequence[str], prog: Optional[str] = None) -> Dict[str, list]:
    """The ``candidates`` command; returns ``{"total": [per image], "per_bandwidth": [[...]],
    "ops": {stage: operations}}``."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", required=True, help='"": random initialisation')
    p.add_argument("--dataset", default="", help="default: the config's first test set")
    p.add_argument("--num-images", type=int, default=0, help="0: all")
    p.add_argument("--extra-candidates", type=int, default=0, help="rectangles added per image")
    p.add_argument("--count-ops", action="store_true", help="operations per stage (slower)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    opts = ["MODEL.WEIGHTS", args.weights] + list(args.opts)
    if args.dataset:
        opts += ["DATASETS.TEST", f"('{args.dataset}',)"]
    cfg = build_config(args.config_file, opts)
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "DVIS":
        sys.exit(f"{args.config_file}: MODEL.META_ARCHITECTURE is not DVIS")
    model = load_model(cfg, args.weights)
    if not args.weights:
        print("no --weights: a randomly initialised model")
    if args.extra_candidates:
        add_rectangle_candidates(model.discretizer, args.extra_candidates)
        print(f"{args.extra_candidates} rectangles added to each image's candidates")
    seen: List[List[torch.Tensor]] = []  # per call of the discretizer, each image's bandwidths
    model.discretizer.register_forward_hook(
        lambda m, i, out: seen.append([c.bandwidths for c in out])
    )
    name = cfg.DATASETS.TEST[0]
    loader = build_detection_test_loader(cfg, name, mapper=InstanceDatasetMapper(cfg, False))
    gt = [len(d.get("annotations", [])) for d in DatasetCatalog.get(name)]
    bws = model.discretizer.bandwidths
    total, per_bw = [], [[] for _ in bws]
    ops = defaultdict(float)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if args.num_images and i >= args.num_images:
                break
            counting = count_stage_ops() if args.count_ops else contextlib.nullcontext({})
            with counting as counts:
                model.inference(batch, do_postprocess=False)
            for k, v in counts.items():
                ops[k] += v
            for image_bws in seen.pop():
                total.append(len(image_bws))
                for k in range(len(bws)):
                    per_bw[k].append(int((image_bws == k).sum()))
    print(f"dataset {name}: {len(total)} images, {statistics.mean(gt[: len(total)]):.2f} GT/image")
    print(
        f"candidates per image: mean {statistics.mean(total):.2f}, median "
        f"{statistics.median(total)}, min {min(total)}, max {max(total)}"
    )
    for k in range(len(bws)):
        print(f"  from bandwidth {bws[k]}: mean {statistics.mean(per_bw[k]):.2f}")
    if ops:
        _print_ops(ops, len(total))
    return {"total": total, "per_bandwidth": per_bw, "ops": dict(ops)}


def _print_ops(ops, num_images: int) -> None:
    """Operations per image of each stage, and their shares of the total."""
    total = sum(ops.values())
    print("operations per image (matmul/conv 2 per multiply-add, others 1 per output element):")
    for name in [OUTSIDE] + sorted(k for k in ops if k != OUTSIDE):
        label = "label-map network and the rest" if name == OUTSIDE else name
        print(f"  {label}: {ops[name] / num_images / 1e9:.4f} G ({100 * ops[name] / total:.2f} %)")


# --------------------------------------------------------------------------------- ceiling
def ceiling(argv: Sequence[str], prog: Optional[str] = None) -> dict:
    """The ``ceiling`` command; returns the evaluator's results (``{"segm": {...}, ...}``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config-file", required=True)
    p.add_argument("--dataset", default="", help="default: the config's first test set")
    p.add_argument("--num-images", type=int, default=0, help="0: all")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    opts = ["MODEL.WEIGHTS", ""] + list(args.opts)
    if args.dataset:
        opts += ["DATASETS.TEST", f"('{args.dataset}',)"]
    cfg = build_config(args.config_file, opts)
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "DVIS":
        sys.exit(f"{args.config_file}: MODEL.META_ARCHITECTURE is not DVIS")
    model = load_model(cfg, "")  # its preprocessing and post-processing only
    name = cfg.DATASETS.TEST[0]
    num = args.num_images or len(DatasetCatalog.get(name))
    with tempfile.TemporaryDirectory() as tmp:
        evaluator = build_coco_evaluator(cfg, name, tmp)
        evaluator.reset()
        for (d,) in annotated_test_batches(cfg, name, num):
            images = model.preprocess_image([d])
            size = images.image_sizes[0]
            t = label_targets(
                [instance_bitmasks(d["instances"])], [size], tuple(images.tensor.shape[-2:]),
                model.stride,
            )  # fmt: skip
            masks = t.masks[0]
            keep = masks.flatten(1).any(1)  # instances left with no label-map cell: lost
            inst = Instances(size, pred_masks=masks[keep], scores=torch.ones(int(keep.sum())))
            inst.pred_classes = d["instances"].gt_classes[keep]
            out = model.postprocess(inst, size, d["height"], d["width"])
            evaluator.process([d], [{"instances": out}])
        results = evaluator.evaluate()
    print(f"{name}, {num} images, perfect label map at stride {model.stride}:")
    for task in ("segm", "boundary", "bbox"):
        if task in results:
            print(f"  {task} AP {results[task]['AP']:.2f}, AP50 {results[task]['AP50']:.2f}, "
                  f"AP75 {results[task]['AP75']:.2f}")  # fmt: skip
    return results


# ------------------------------------------------------------------------------ grad norms
def grad_norms(argv: Sequence[str], prog: Optional[str] = None) -> Dict[str, float]:
    """The ``grad-norms`` command; returns ``{loss term: mean gradient norm on the backbone}``."""
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    from instseg_d2.engine import InstSegCheckpointer, Trainer, checkpoint_meta

    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config-file", required=True)
    p.add_argument(
        "--weights",
        required=True,
        help="a checkpoint; 'init': as a training starts (MODEL.WEIGHTS)",
    )
    p.add_argument("--num-batches", type=int, default=8)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    opts = list(args.opts) + ([] if args.weights == "init" else ["MODEL.WEIGHTS", args.weights])
    cfg = build_config(args.config_file, opts)
    cfg.freeze()
    if cfg.MODEL.META_ARCHITECTURE != "DVIS":
        sys.exit(f"{args.config_file}: MODEL.META_ARCHITECTURE is not DVIS")
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else 0)  # the same heads and batches every time
    if args.weights == "init":  # the pretrained backbone, if any, loaded as train_net.py does
        model = Trainer.build_model(cfg)
        InstSegCheckpointer(model, meta=checkpoint_meta(cfg)).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=False
        )
    else:
        model = load_model(cfg, args.weights)
    model.train()
    shared = [q for q in model.backbone.parameters() if q.requires_grad]
    sums: Dict[str, float] = defaultdict(float)
    loader = iter(Trainer.build_train_loader(cfg))
    with EventStorage(0):
        for _ in range(args.num_batches):
            losses = model(next(loader))
            for name, loss in losses.items():
                grads = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
                sq = sum(float(g.pow(2).sum()) for g in grads if g is not None)
                sums[name] += sq**0.5 / args.num_batches
    print(f"gradient norm on the backbone + FPN ({len(shared)} tensors), "
          f"mean of {args.num_batches} batches, weights {args.weights}:")  # fmt: skip
    for name, value in sorted(sums.items(), key=lambda kv: -kv[1]):
        print(f"  {name}: {value:.4g}")
    return dict(sums)


# -------------------------------------------------------------------------------- step cost
def step_cost(argv: Sequence[str], prog: Optional[str] = None) -> list:
    """The ``step-cost`` command; returns ``(config file, StepCost)`` per config."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    add_step_cost_arguments(p)
    p.add_argument("--extra-candidates", type=int, default=0, help="rectangles/image (DVIS)")
    args = parse_step_cost_args(p, argv)
    dvis = [f for f, c in zip(args.config_file, args.cfgs) if c.MODEL.META_ARCHITECTURE == "DVIS"]
    if args.extra_candidates < 0 or (args.extra_candidates and not dvis):
        p.error(
            "--extra-candidates needs N >= 0 and a config whose MODEL.META_ARCHITECTURE is DVIS"
        )

    def hook_for(cfg):
        if not args.extra_candidates or cfg.MODEL.META_ARCHITECTURE != "DVIS":
            return None
        return lambda model: add_rectangle_candidates(model.discretizer, args.extra_candidates)

    if args.extra_candidates:
        print(f"{args.extra_candidates} rectangles added to the candidates of: {', '.join(dvis)}")
    return run_step_costs(args, hook_for, scalars=[CANDIDATES])


COMMANDS = {
    "candidates": candidates,
    "ceiling": ceiling,
    "grad-norms": grad_norms,
    "step-cost": step_cost,
}


def main(argv: Optional[Sequence[str]] = None):
    """Run the diagnostic named by the first argument with the rest; return its result."""
    return run_command(COMMANDS, "python -m dvis_d2.diagnostics", argv)


if __name__ == "__main__":
    main()
