"""Training, evaluation, checkpoints and command-line setup shared by every method."""

from .checkpoint import CheckpointMismatchError, InstSegCheckpointer, load_resnet_state
from .evaluation import BoxesFromMasks, build_coco_evaluator
from .inference import (
    INPUT_ERRORS,
    build_inference_model,
    inference_argument_parser,
    model_classes,
)
from .num_classes import ClassCountError, dataset_classes, sync_num_classes
from .optimizer import build_optimizer
from .setup import ConfigKeyError, build_config, default_argument_parser, merge_config, setup
from .trainer import Trainer, checkpoint_meta, load_model, recorded_meta

__all__ = [
    "INPUT_ERRORS",
    "BoxesFromMasks",
    "CheckpointMismatchError",
    "ClassCountError",
    "ConfigKeyError",
    "InstSegCheckpointer",
    "Trainer",
    "build_coco_evaluator",
    "build_config",
    "build_inference_model",
    "build_optimizer",
    "checkpoint_meta",
    "dataset_classes",
    "default_argument_parser",
    "inference_argument_parser",
    "load_model",
    "load_resnet_state",
    "merge_config",
    "model_classes",
    "recorded_meta",
    "setup",
    "sync_num_classes",
]
