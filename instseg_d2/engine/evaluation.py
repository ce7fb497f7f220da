"""One evaluator for every method: detectron2's COCOEvaluator (segm and bbox)."""

from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from detectron2.structures import Boxes

from ..layers import boxes_from_masks


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


def build_coco_evaluator(cfg, dataset_name: str, output_folder: str) -> DatasetEvaluator:
    """COCOEvaluator on ``("bbox", "segm")`` wrapped in :class:`BoxesFromMasks`."""
    tasks = ("bbox", "segm") if _has_masks(cfg) else ("bbox",)
    coco = COCOEvaluator(dataset_name, tasks=tasks, output_dir=output_folder)
    return BoxesFromMasks(coco)


def _has_masks(cfg) -> bool:
    # Every method of this project predicts masks; plain detectors (FCOS as a detector,
    # detectron2's Faster R-CNN) do not.
    return bool(cfg.MODEL.MASK_ON)
