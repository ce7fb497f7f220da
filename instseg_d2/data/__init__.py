"""Data: the shapes dataset, COCO-json registration and the shared mapper."""

from .coco import (
    DatasetFormatError,
    parse_dataset_arg,
    read_coco_json,
    register_coco_instances_checked,
    validate_coco_dict,
)
from .crop import RandomCropWithInstance
from .mapper import InstanceDatasetMapper, annotated_test_batches
from .shapes import SHAPES_CLASSES, SHAPES_SPLITS, ensure_shapes, register_shapes

register_shapes()

__all__ = [
    "DatasetFormatError",
    "InstanceDatasetMapper",
    "RandomCropWithInstance",
    "SHAPES_CLASSES",
    "SHAPES_SPLITS",
    "annotated_test_batches",
    "ensure_shapes",
    "parse_dataset_arg",
    "read_coco_json",
    "register_coco_instances_checked",
    "register_shapes",
    "validate_coco_dict",
]
