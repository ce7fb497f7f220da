"""The one dataset mapper shared by every method."""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, build_detection_test_loader
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from .crop import RandomCropWithInstance
from .image_io import ImageReadError, read_image

logger = logging.getLogger(__name__)


class InstanceDatasetMapper(DatasetMapper):
    """Map a Detectron2 dataset dict to model inputs, for every method of this project.

    Compared with :class:`detectron2.data.DatasetMapper`:

    * instance masks are always loaded when the annotations have them (several methods use
      masks for target assignment even when ``MODEL.MASK_ON`` is False, e.g. FCOS centre
      sampling at the mask's centre of mass); ``INPUT.MASK_FORMAT`` picks polygon or bitmask,
      and an image whose annotations hold RLE masks gets bitmasks whatever the format;
    * the optional crop (``INPUT.CROP``) is instance-aware when ``INPUT.CROP.CROP_INSTANCE``;
      boxes are then recomputed from the cropped masks;
    * 16-bit and float images are scaled to 8 bits by their range
      (:func:`instseg_d2.data.image_io.read_image`); an image that cannot be read raises an
      error that names the file, and a training
      annotation without a mask raises an error that names the image and the annotation.

    Output per image: ``image`` (C, H, W) uint8 tensor in ``INPUT.FORMAT``, ``height``/``width``
    of the original image, and in training ``instances`` with ``gt_boxes`` (Boxes, XYXY),
    ``gt_classes`` (R,) int64 and ``gt_masks`` (PolygonMasks or BitMasks of the resized image).
    """

    @configurable
    def __init__(self, is_train: bool = True, *, require_masks: bool = True, **kwargs):
        super().__init__(is_train, **kwargs)
        self.require_masks = require_masks

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        augs = ret["augmentations"]
        if cfg.INPUT.CROP.ENABLED and is_train:
            if cfg.INPUT.CROP.CROP_INSTANCE:
                augs[0] = RandomCropWithInstance(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE)
            ret["recompute_boxes"] = True
        ret["use_instance_mask"] = True
        ret["require_masks"] = bool(cfg.MODEL.MASK_ON)
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        try:
            image = read_image(file_name, format=self.image_format)
        except ImageReadError:
            raise  # its message names the file
        except Exception as e:  # PIL raises several types; name the file whatever it is
            raise ValueError(f"Cannot read image {file_name!r}: {type(e).__name__}: {e}") from e
        utils.check_image_size(dataset_dict, image)

        annos = dataset_dict.get("annotations") if self.is_train else None
        boxes = None
        if annos:
            boxes = np.array(
                [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annos]
            ).reshape(-1, 4)
        aug_input = T.AugInput(image, boxes=boxes)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        annos = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        with_mask = [a for a in annos if a.get("segmentation")]
        if self.require_masks and len(with_mask) != len(annos):
            bad = next(a for a in annos if not a.get("segmentation"))
            raise ValueError(
                f"Image {dataset_dict['file_name']!r}: annotation "
                f"{bad.get('id', '(no id)')} has no 'segmentation', but the model needs masks."
            )
        use_masks = len(annos) > 0 and len(with_mask) == len(annos)
        mask_format = self.instance_mask_format
        if use_masks and any(isinstance(a["segmentation"], dict) for a in annos):
            mask_format = "bitmask"  # RLE cannot be represented as polygons
        annos = [
            utils.transform_instance_annotations(a, transforms, image_shape)
            for a in (annos if use_masks else [_without_mask(a) for a in annos])
        ]
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=mask_format)
        if self.recompute_boxes and instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)


def annotated_test_batches(cfg, dataset_name: str, num_images: int) -> list:
    """The first ``num_images`` images of ``dataset_name`` as one-image batches (lists of one
    mapped dict) that keep their ground truth (``instances``): the training mapper with the
    test-time resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) and no flip. For tools that
    measure a model, or the data, against the ground truth."""
    aug = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)]
    mapper = InstanceDatasetMapper(cfg, True, augmentations=aug)
    batches = []
    for batch in build_detection_test_loader(cfg, dataset_name, mapper=mapper):
        if len(batches) >= num_images:
            break
        batches.append(batch)
    return batches


def _without_mask(anno: dict) -> dict:
    anno = dict(anno)
    anno.pop("segmentation", None)
    return anno
