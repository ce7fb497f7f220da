"""Helpers for the test suites of the platform and of every method package.

``register_tiny_shapes(folder)`` registers ``shapes_tiny_train`` / ``shapes_tiny_val`` (a few
images, same generator as the real splits) so that end-to-end tests train and evaluate in
seconds; ``train_and_evaluate`` runs train_net's path in-process and returns COCO results.
Parity with the reference implementations: :mod:`instseg_d2.parity`.
"""

import os
from typing import List, Sequence, Tuple

from .data.coco import register_coco_instances_checked
from .data.shapes import ShapesSpec, generate_shapes

TINY_SPECS = {
    "shapes_tiny_train": ShapesSpec(num_images=16, seed=100),
    "shapes_tiny_val": ShapesSpec(num_images=6, seed=101),
}

TINY_OPTS = [
    "DATASETS.TRAIN", "('shapes_tiny_train',)",
    "DATASETS.TEST", "('shapes_tiny_val',)",
    "SOLVER.IMS_PER_BATCH", "2",
    "SOLVER.MAX_ITER", "3",
    "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", "100000",
    "DATALOADER.NUM_WORKERS", "0",
    "MODEL.DEVICE", "cpu",
    # from scratch: the shapes configs' pretrained backbone takes minutes to build
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.BACKBONE.FREEZE_AT", "0",
    "INPUT.MIN_SIZE_TRAIN", "(96,)",
    "INPUT.MIN_SIZE_TEST", "96",
]  # fmt: skip


def register_tiny_shapes(folder: str) -> Tuple[str, ...]:
    """Generate (once per folder) and register the tiny shapes splits; return their names."""
    for name, spec in TINY_SPECS.items():
        out = os.path.join(folder, name)
        json_file = os.path.join(out, "annotations.json")
        if not os.path.isfile(json_file):
            generate_shapes(out, spec)
        register_coco_instances_checked(name, json_file, os.path.join(out, "images"), replace=True)
    return tuple(TINY_SPECS)


def build_tiny_cfg(config_file: str, output_dir: str, opts: Sequence[str] = ()):
    """Config of ``config_file`` on the tiny splits, 3 iterations, CPU, frozen."""
    from .engine import build_config

    cfg = build_config(config_file, list(TINY_OPTS) + ["OUTPUT_DIR", output_dir] + list(opts))
    cfg.freeze()
    return cfg


def train_and_evaluate(config_file: str, output_dir: str, opts: Sequence[str] = ()) -> dict:
    """Train with the project's Trainer on the tiny splits, then evaluate; return results.

    Call :func:`register_tiny_shapes` first. The results are COCOEvaluator's
    ``{"bbox": {...}, "segm": {...}}``.
    """
    from .engine import Trainer

    cfg = build_tiny_cfg(config_file, output_dir, opts)
    os.makedirs(output_dir, exist_ok=True)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer.train()


def loss_history(output_dir: str, key: str = "total_loss") -> List[float]:
    """Values of ``key`` logged to ``metrics.json`` by a training run, in order."""
    import json

    vals = []
    with open(os.path.join(output_dir, "metrics.json")) as f:
        for line in f:
            rec = json.loads(line)
            if key in rec:
                vals.append(rec[key])
    return vals
