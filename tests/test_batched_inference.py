"""Inference of a batch of images of different sizes, for every shapes config.

Each output must have its own image's size and equal the output of that image run alone. The
two images differ in size but pad to the same batch size (96 x 128 at size divisibility 32):
zero padding changes the convolutions' outputs near the border of a smaller image (and
GroupNorm statistics), so only then is "alone" the same computation. A second batch whose
images pad differently (the batch's padded size then differs from each image's) checks the
output sizes. Untrained models with low score thresholds, so that there are detections.
"""

import os

import pytest
import torch

from instseg_d2.engine import Trainer, build_config
from instseg_d2.testing import TINY_OPTS
from shapes_configs import CONFIGS, SHAPES_CONFIGS, TRANSFINER_THREE_LEVELS

FCOS_LOW = ["MODEL.FCOS.INFERENCE_TH_TEST", "0.0"]
RCNN_LOW = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"]
LOW_THRESHOLDS = {
    "BlendMask": FCOS_LOW,
    "CondInst": FCOS_LOW,
    "FCOS": FCOS_LOW,
    "DVIS": ["MODEL.DVIS.MEANSHIFT.FG_THRESH", "0.0", "MODEL.DVIS.VERIFY.SCORE_THRESH", "0.0"],
    "MaskLab": RCNN_LOW,
    "MaskRCNN": RCNN_LOW,
    "SemiConv": RCNN_LOW,
    "SOLO": ["MODEL.SOLO.SCORE_THR", "0.0", "MODEL.SOLO.MASK_THR", "0.005",
             "MODEL.SOLO.UPDATE_THR", "0.0", "TEST.DETECTIONS_PER_IMAGE", "5"],
    "SparseInst": ["TEST.DETECTIONS_PER_IMAGE", "20"],
    # two detections, tens of refined nodes each (untrained incoherence is 0.5-0.52)
    "Transfiner": ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "2",
                   "MODEL.TRANSFINER.TEST_INCOHERENT_THRESH", "[0.515, 0.515, 0.9]",
                   *TRANSFINER_THREE_LEVELS],
}  # fmt: skip
SAME_PADDING = ((96, 128), (70, 100))
OTHER_PADDING = ((96, 128), (128, 80))


def _images(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8),
         "height": h, "width": w}
        for h, w in sizes
    ]  # fmt: skip


def _assert_same(batched, alone):
    assert batched.image_size == alone.image_size
    assert len(batched) == len(alone) > 0
    torch.testing.assert_close(batched.scores, alone.scores, rtol=1e-4, atol=1e-5)
    assert torch.equal(batched.pred_classes, alone.pred_classes)
    torch.testing.assert_close(batched.pred_boxes.tensor, alone.pred_boxes.tensor, rtol=1e-4,
                               atol=1e-3)  # fmt: skip
    if alone.has("pred_masks"):
        # a probability within float rounding of the threshold may flip: a few pixels
        differ = (batched.pred_masks != alone.pred_masks).float().mean().item()
        assert differ < 1e-3, differ


@pytest.mark.parametrize("config", SHAPES_CONFIGS)
def test_batch_of_unequal_images(config, tiny_shapes):
    method = config.split(os.sep)[0]
    opts = list(TINY_OPTS) + ["MODEL.WEIGHTS", ""] + LOW_THRESHOLDS[method]
    cfg = build_config(os.path.join(CONFIGS, config), opts)
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    images = _images(SAME_PADDING)
    with torch.no_grad():
        batched = model(images)
        alone = [model([x])[0] for x in images]
        other = model(_images(OTHER_PADDING, seed=1))
    for out, ref, size in zip(batched, alone, SAME_PADDING):
        assert out["instances"].image_size == size
        _assert_same(out["instances"], ref["instances"])
    for out, size in zip(other, OTHER_PADDING):
        inst = out["instances"]
        assert inst.image_size == size
        if inst.has("pred_masks"):
            assert inst.pred_masks.shape[1:] == size
