"""A trained model from a config and a checkpoint alone (demo, export): no dataset needed."""

import argparse
import logging
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..data import parse_dataset_arg
from .checkpoint import CheckpointMismatchError
from .num_classes import ClassCountError, dataset_classes
from .setup import ConfigKeyError, build_config, merge_config, register_datasets
from .trainer import load_model, recorded_meta

logger = logging.getLogger(__name__)

# What a tool that runs a trained model reports as a one-line error (bad file, key or value).
INPUT_ERRORS = (ClassCountError, ConfigKeyError, CheckpointMismatchError, OSError, ValueError)


def inference_argument_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of :func:`build_inference_model` (``--config-file``, ``--dataset``,
    ``--opts``) in a parser to which a tool adds its own."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument(
        "--dataset", action="append", default=[], metavar="NAME=JSON:IMAGE_DIR",
        help="the classes of a checkpoint that does not record them (repeatable; the first)",
    )  # fmt: skip
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides (last)"
    )
    return p


def model_classes(
    cfg: CfgNode, weights: str, datasets: Sequence[str] = ()
) -> Tuple[List[str], str]:
    """The classes a model predicts, and where they come from (for messages).

    In this order: the first of ``datasets`` (registered names, e.g. from ``--dataset``); the
    classes that checkpoint ``weights`` records (``instseg_meta``, written by this project's
    trainer); the metadata of the config's first registered DATASETS.TEST / TRAIN entry (e.g.
    detectron2's builtin COCO, for a model-zoo checkpoint). A :class:`ClassCountError` says
    what is missing when none of them gives classes.
    """
    if datasets:
        return dataset_classes(datasets[0]), f"dataset {datasets[0]!r}"
    meta = recorded_meta(weights) if weights else {}
    if meta.get("thing_classes"):
        return list(meta["thing_classes"]), f"checkpoint {weights!r}"
    registered = set(DatasetCatalog.list())
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        classes = MetadataCatalog.get(name).get("thing_classes") if name in registered else None
        if classes:
            return list(classes), f"dataset {name!r}"
    where = f"checkpoint {weights!r} records none" if weights else "MODEL.WEIGHTS is empty"
    raise ClassCountError(
        f"Cannot tell the classes of the model: {where} (only checkpoints saved by this "
        "project's train_net.py record them), no --dataset NAME=JSON:IMAGE_DIR was given, and "
        f"the config's datasets {list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)} are not "
        "registered. Pass --dataset with the annotations the model was trained on."
    )


def build_inference_model(
    config_file: str,
    opts: Sequence[str] = (),
    dataset_specs: Sequence[str] = (),
    weights: Optional[str] = None,
) -> Tuple[CfgNode, torch.nn.Module, List[str]]:
    """Config, model (eval mode, weights loaded strictly) and class names for inference.

    Args:
        config_file, opts: as for ``train_net.py``; ``MODEL.WEIGHTS`` names the checkpoint
            unless ``weights`` is given.
        dataset_specs: ``NAME=JSON:IMAGE_DIR`` datasets to register; the first one gives the
            classes (for a checkpoint that does not record them).

    Returns:
        ``(cfg, model, thing_classes)``; ``cfg`` is frozen, its class count that of the
        classes (see :func:`model_classes`), whatever its DATASETS say.
    """
    register_datasets(dataset_specs)
    names = [parse_dataset_arg(spec)[0] for spec in dataset_specs]
    merged, _ = merge_config(config_file, opts)
    weights = merged.MODEL.WEIGHTS if weights is None else weights
    classes, source = model_classes(merged, weights, names)
    cfg = build_config(config_file, opts, thing_classes=classes, classes_source=source)
    cfg.MODEL.WEIGHTS = weights
    cfg.freeze()
    if not weights:
        logger.warning("No MODEL.WEIGHTS: the model keeps its random initialisation")
    logger.info("%s: %d classes from %s", cfg.MODEL.META_ARCHITECTURE, len(classes), source)
    return cfg, load_model(cfg, weights, classes), classes
