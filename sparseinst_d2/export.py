"""An exportable SparseInst: one image in, final detections out, post-processing included.

:class:`SparseInstPredictor` wraps a trained :class:`~sparseinst_d2.SparseInst` into a module
whose forward takes the (resized) image tensor and returns tensors only: scores, classes,
binary masks and their boxes. Its control flow does not depend on the data, so it exports
with ``torch.export`` (dynamic height and width, a data-dependent number of detections)::

    predictor = SparseInstPredictor(model).eval()
    program = export_predictor(predictor, example_image)
    torch.export.save(program, "sparseinst.pt2")
    scores, classes, masks, boxes = torch.export.load("sparseinst.pt2").module()(image)

``tools/sparseinst_export.py`` does this for a config and checkpoint.
"""

from typing import Tuple

import torch
from torch import nn

from .postprocess import detect, resize_canvas


class SparseInstPredictor(nn.Module):
    """Inference of a :class:`SparseInst` on one image, as tensors in and out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.encoder, self.decoder = model.backbone, model.encoder, model.decoder
        self.register_buffer("pixel_mean", model.pixel_mean.clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.clone(), False)
        self.size_divisibility = model.size_divisibility
        self.cls_threshold, self.mask_threshold = model.cls_threshold, model.mask_threshold
        self.max_detections = model.max_detections

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            image: (3, H, W) image in ``INPUT.FORMAT``, uint8 or float, already resized to the
                test size (as the data loader gives it to :class:`SparseInst`).

        Returns:
            scores (M,), classes (M,) int64, masks (M, H, W) bool and boxes (M, 4) XYXY float,
            the same as ``SparseInst.inference([{"image": image}])``.
        """
        h, w = image.shape[-2:]
        x = (image.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        d = self.size_divisibility
        ph, pw = (h + d - 1) // d * d, (w + d - 1) // d * d
        x = resize_canvas(x, (ph, pw))[None]
        out = self.decoder(self.encoder(self.backbone(x)))
        return detect(
            out["pred_logits"][0],
            out["pred_masks"][0],
            out["pred_objectness"][0],
            (ph, pw),
            (h, w),
            (h, w),
            self.cls_threshold,
            self.mask_threshold,
            self.max_detections,
            static_shapes=True,
        )


def export_predictor(predictor: SparseInstPredictor, example: torch.Tensor):
    """``torch.export`` the predictor with dynamic image height and width.

    Args:
        predictor: in eval mode.
        example: a (3, H, W) example image.

    Returns:
        ``torch.export.ExportedProgram``.
    """
    if predictor.training:
        raise ValueError("export_predictor: put the predictor in eval mode first")
    d = predictor.size_divisibility
    dims = {
        "image": {1: torch.export.Dim("height", min=2 * d), 2: torch.export.Dim("width", min=2 * d)}
    }
    with torch.no_grad():
        return torch.export.export(predictor, (example,), dynamic_shapes=dims)
