"""Command line and config setup shared by train_net.py and the tools."""

import argparse
import difflib
import logging
import time
from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser as d2_argument_parser
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import DatasetFormatError, parse_dataset_arg, register_coco_instances_checked
from ..data.check import check_dataset_images
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
    parser.add_argument(
        "--keep-background-class",
        action="store_true",
        help="keep a --dataset category named like a background placeholder (_background_, "
        "background) that has no instance; by default it is dropped from the class list",
    )
    parser.add_argument(
        "--drop-empty-classes",
        action="store_true",
        help="drop from each --dataset every category that has no instance in it (train and "
        "test sets must keep the same classes)",
    )
    return parser


def register_datasets(
    specs: List[str], keep_background: bool = False, drop_empty: bool = False
) -> None:
    """Register ``NAME=annotations.json:image_dir`` specs (see
    :func:`instseg_d2.data.register_coco_instances_checked` for the two flags)."""
    for spec in specs:
        register_coco_instances_checked(
            *parse_dataset_arg(spec), keep_background=keep_background, drop_empty=drop_empty
        )


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
    register_datasets(
        args.dataset,
        keep_background=getattr(args, "keep_background_class", False),
        drop_empty=getattr(args, "drop_empty_classes", False),
    )
    cfg = build_config(args.config_file, args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    # the project's own messages (data check, health report, FCOS warnings) to console + log.txt
    setup_logger(
        cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="instseg_d2", enable_propagation=True
    )
    return cfg


def check_data(cfg: CfgNode, eval_only: bool = False) -> None:
    """The early data check (``DATASETS.IMAGE_CHECK``) of the training and test sets (test sets
    only with ``eval_only``), run by the main process before the model is built; every
    process raises its :class:`DatasetFormatError`, which names the bad files."""
    names = ([] if eval_only else list(cfg.DATASETS.TRAIN)) + list(cfg.DATASETS.TEST)
    error = None
    if comm.is_main_process() and cfg.DATASETS.IMAGE_CHECK != "none":
        start = time.perf_counter()
        try:
            n = check_dataset_images(names, cfg.DATASETS.IMAGE_CHECK)
            logger.info(
                "Image check (DATASETS.IMAGE_CHECK %r) of %s: %d images fine in %.1f s",
                cfg.DATASETS.IMAGE_CHECK, ", ".join(names), n, time.perf_counter() - start,
            )  # fmt: skip
        except DatasetFormatError as e:
            error = str(e)
    if comm.get_world_size() > 1:
        error = comm.all_gather(error)[0]
    if error:
        raise DatasetFormatError(error)
