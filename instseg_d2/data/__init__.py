"""Data: the shapes dataset, COCO-json registration and the shared mapper."""

from .coco import (
    DatasetFormatError,
    parse_dataset_arg,
    read_coco_json,
    register_coco_instances_checked,
    validate_coco_dict,
)
from .check import check_dataset_images, check_images, dataset_summary
from .crop import RandomCropWithInstance
from .image_io import ImageReadError, read_image
from .mapper import InstanceDatasetMapper, annotated_test_batches
from .shapes import SHAPES_CLASSES, SHAPES_SPLITS, ensure_shapes, register_shapes

register_shapes()

__all__ = [
    "DatasetFormatError",
    "ImageReadError",
    "InstanceDatasetMapper",
    "RandomCropWithInstance",
    "SHAPES_CLASSES",
    "SHAPES_SPLITS",
    "annotated_test_batches",
    "check_dataset_images",
    "check_images",
    "dataset_summary",
    "ensure_shapes",
    "parse_dataset_arg",
    "read_coco_json",
    "read_image",
    "register_coco_instances_checked",
    "register_shapes",
    "validate_coco_dict",
]
