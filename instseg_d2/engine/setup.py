"""Command line and config setup shared by train_net.py and the tools."""

import argparse
import difflib
import logging
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser as d2_argument_parser
from detectron2.engine import default_setup

from ..data import parse_dataset_arg, register_coco_instances_checked
from ..plugins import get_full_cfg, num_classes_keys
from .num_classes import sync_num_classes

logger = logging.getLogger(__name__)


class ConfigKeyError(KeyError):
    """A config file or command-line override names a key that does not exist."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0])


def default_argument_parser(epilog=None) -> argparse.ArgumentParser:
    """detectron2's train_net parser plus ``--dataset NAME=annotations.json:image_dir``."""
    parser = d2_argument_parser(epilog)
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=JSON:IMAGE_DIR",
        help="register a COCO-format dataset under NAME (repeatable); use it with "
        "DATASETS.TRAIN / DATASETS.TEST, e.g. DATASETS.TRAIN \"('NAME',)\"",
    )
    return parser


def register_datasets(specs: List[str]) -> None:
    for spec in specs:
        register_coco_instances_checked(*parse_dataset_arg(spec))


def _all_keys(cfg: CfgNode, prefix: str = "") -> List[str]:
    out = []
    for k, v in cfg.items():
        out += _all_keys(v, f"{prefix}{k}.") if isinstance(v, CfgNode) else [prefix + k]
    return out


def _key_error(cfg: CfgNode, err: Exception, source: str) -> ConfigKeyError:
    msg = str(err.args[0]) if err.args else str(err)
    key = msg.split(":")[-1].strip().strip("'\"")
    hint = difflib.get_close_matches(key, _all_keys(cfg), n=3, cutoff=0.6)
    did_you_mean = f" Did you mean {', '.join(hint)}?" if hint else ""
    return ConfigKeyError(f"{source}: config key {key} does not exist.{did_you_mean}")


def merge_config(config_file: str = "", opts: Sequence[str] = ()) -> Tuple[CfgNode, CfgNode]:
    """The full config (detectron2 + platform + every method) merged with a file and overrides,
    and the defaults it started from; the class count is not set yet.

    Unknown keys raise :class:`ConfigKeyError` naming the file (or the command line) and the
    key. A CUDA device on a machine without CUDA falls back to CPU, with a warning.
    """
    cfg = get_full_cfg()
    defaults = cfg.clone()
    cfg.set_new_allowed(False)
    if config_file:
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, AssertionError) as e:
            if "Non-existent" not in str(e):
                raise
            raise _key_error(cfg, e, f"config file {config_file!r} (or a _BASE_ it includes)")
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError) as e:
            if "Non-existent" not in str(e):
                raise
            raise _key_error(cfg, e, "command-line override")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using cpu", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    return cfg, defaults


def build_config(
    config_file: str = "",
    opts: Sequence[str] = (),
    thing_classes: Optional[Sequence[str]] = None,
    classes_source: str = "the given classes",
) -> CfgNode:
    """:func:`merge_config`, with every class-count key set (see :func:`sync_num_classes`).

    The class count comes from the config's datasets, or, given ``thing_classes`` (e.g. the
    classes a checkpoint records, ``classes_source`` naming them in messages), from those: then
    DATASETS need not exist (inference with a trained model).
    """
    cfg, defaults = merge_config(config_file, opts)
    sync_num_classes(cfg, defaults, num_classes_keys(), thing_classes, classes_source)
    return cfg


def setup(args) -> CfgNode:
    """Register ``--dataset`` entries, build and freeze the config, set up logging/output."""
    register_datasets(args.dataset)
    cfg = build_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg
