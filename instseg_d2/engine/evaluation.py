"""One evaluator for every method: detectron2's COCOEvaluator (segm and bbox), optionally with
boundary AP, seeing every detection a model is allowed to make (``TEST.DETECTIONS_PER_IMAGE``)."""

import copy
import itertools
import logging
from typing import Dict, List

import numpy as np
import pycocotools.mask as mask_util
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.evaluation.fast_eval_api import COCOeval_opt
from detectron2.structures import Boxes
from detectron2.utils import comm
from scipy import ndimage

from ..layers import boxes_from_masks

logger = logging.getLogger(__name__)


class BoxesFromMasks(DatasetEvaluator):
    """Wrap an evaluator; predictions without ``pred_boxes`` get the boxes of their masks.

    Box-free methods (SOLO, SparseInst, DVIS) then get a meaningful COCO box AP, and
    :func:`detectron2.evaluation.coco_evaluation.instances_to_coco_json` works unchanged.
    """

    def __init__(self, evaluator: DatasetEvaluator):
        self._evaluator = evaluator

    def reset(self):
        self._evaluator.reset()

    def process(self, inputs, outputs):
        for out in outputs:
            inst = out.get("instances")
            if inst is not None and not inst.has("pred_boxes") and inst.has("pred_masks"):
                inst.pred_boxes = Boxes(boxes_from_masks(inst.pred_masks))
        self._evaluator.process(inputs, outputs)

    def evaluate(self):
        return self._evaluator.evaluate()


# ----------------------------------------------------------------------------------------
# Boundary AP (Cheng et al., "Boundary IoU", CVPR 2021)
# ----------------------------------------------------------------------------------------
def mask_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The inner boundary band of a binary mask: the pixels of ``mask`` within
    ``d = max(1, round(dilation_ratio * image diagonal))`` pixels of its contour, the image
    border counting as contour (a mask cut by the border has a boundary there).

    Args:
        mask: (H, W) bool or {0, 1}.
    Returns:
        (H, W) bool: ``mask`` minus its erosion by a 3x3 square ``d`` times.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h * h + w * w))))
    eroded = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool), iterations=d)
    return mask & ~eroded


class BoundaryCOCOeval(COCOevalMaxDets, COCOeval_opt):
    """COCOeval on masks whose IoU is ``min(mask IoU, boundary IoU)`` (the boundary-AP
    definition of the Boundary IoU paper and its reference API; crowd ground truth keeps the mask
    IoU). Matching in detectron2's C++ COCOeval; summaries follow ``params.maxDets`` (any cap,
    not only 100)."""

    def __init__(self, coco_gt, coco_dt, dilation_ratio: float = 0.02):
        super().__init__(coco_gt, coco_dt, "segm")
        self.dilation_ratio = dilation_ratio

    def _boundary(self, ann: dict) -> dict:
        if "_boundary_rle" not in ann:
            m = mask_util.decode(ann["segmentation"]).astype(bool)
            b = mask_boundary(m, self.dilation_ratio)
            ann["_boundary_rle"] = mask_util.encode(np.asfortranarray(b.astype(np.uint8)))
        return ann["_boundary_rle"]

    def computeIoU(self, imgId, catId):  # noqa: N802 -- pycocotools' name
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        crowd = [int(g["iscrowd"]) for g in gt]
        mask_iou = mask_util.iou([d["segmentation"] for d in dt],
                                 [g["segmentation"] for g in gt], crowd)  # fmt: skip
        if len(gt) == 0 or len(dt) == 0:
            return mask_iou
        boundary_iou = mask_util.iou([self._boundary(d) for d in dt],
                                     [self._boundary(g) for g in gt], crowd)  # fmt: skip
        iou = np.array(mask_iou)
        plain = np.array(crowd) == 0
        iou[:, plain] = np.minimum(iou[:, plain], np.array(boundary_iou)[:, plain])
        return iou


class InstSegCOCOEvaluator(COCOEvaluator):
    """detectron2's COCOEvaluator, plus an optional ``"boundary"`` task: boundary AP computed
    on the same segm results (:class:`BoundaryCOCOeval`)."""

    def __init__(self, dataset_name, *, boundary: bool = False, dilation_ratio=0.02, **kwargs):
        super().__init__(dataset_name, **kwargs)
        self._boundary = boundary and "segm" in self._tasks
        self._dilation_ratio = dilation_ratio

    def _eval_predictions(self, predictions, img_ids=None):
        # detectron2 maps the category ids of the results in place: keep a copy for boundary AP
        results = copy.deepcopy(list(itertools.chain(*[x["instances"] for x in predictions])))
        super()._eval_predictions(predictions, img_ids=img_ids)
        if self._boundary:
            self._results["boundary"] = self._eval_boundary(results, img_ids)

    def _eval_boundary(self, results: List[dict], img_ids=None) -> Dict[str, float]:
        meta = self._metadata
        if hasattr(meta, "thing_dataset_id_to_contiguous_id"):
            reverse = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
            for r in results:
                r["category_id"] = reverse[r["category_id"]]
        for r in results:
            r.pop("bbox", None)  # area = mask area, as detectron2 does for segm
        if not results:
            logger.warning("Boundary AP: no predictions")
            return {k: float("nan") for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        coco_dt = self._coco_api.loadRes(results)
        ev = BoundaryCOCOeval(self._coco_api, coco_dt, self._dilation_ratio)
        ev.params.maxDets = list(self._max_dets_per_image)
        if img_ids is not None:
            ev.params.imgIds = img_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        self._logger.info("Boundary AP (min of mask and boundary IoU):")
        return self._derive_coco_results(ev, "segm", class_names=meta.get("thing_classes"))


def build_coco_evaluator(cfg, dataset_name: str, output_folder: str) -> DatasetEvaluator:
    """COCOEvaluator on ``("bbox", "segm")`` (+ boundary AP with ``TEST.BOUNDARY_AP``), scoring
    up to ``TEST.DETECTIONS_PER_IMAGE`` detections per image, wrapped in
    :class:`BoxesFromMasks`."""
    tasks = ("bbox", "segm") if _has_masks(cfg) else ("bbox",)
    coco = InstSegCOCOEvaluator(
        dataset_name,
        tasks=tasks,
        output_dir=output_folder,
        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        boundary=cfg.TEST.BOUNDARY_AP,
        dilation_ratio=cfg.TEST.BOUNDARY_DILATION_RATIO,
        distributed=comm.get_world_size() > 1,
    )
    return BoxesFromMasks(coco)


def _has_masks(cfg) -> bool:
    # Every method of this project predicts masks; plain detectors (FCOS as a detector,
    # detectron2's Faster R-CNN) do not.
    return bool(cfg.MODEL.MASK_ON)
