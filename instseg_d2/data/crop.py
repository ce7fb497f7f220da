"""Instance-aware random crop (the crop window keeps at least one instance)."""

import numpy as np
from detectron2.data import transforms as T


class RandomCropWithInstance(T.RandomCrop):
    """Random crop whose window contains a randomly chosen instance box.

    The crop size is drawn as in :class:`detectron2.data.transforms.RandomCrop` (``crop_type``
    and ``crop_size`` as ``INPUT.CROP.TYPE`` / ``INPUT.CROP.SIZE``). The window is then placed
    uniformly among the positions that contain the whole box of one random instance; when the
    box is larger than the window, among the positions that contain its centre. Without boxes it
    is a plain random crop. Used through ``T.AugInput(image, boxes=...)``.
    """

    def get_transform(self, image, boxes=None):
        h, w = image.shape[:2]
        ch, cw = self.get_crop_size((h, w))
        if boxes is None or len(boxes) == 0:
            return super().get_transform(image)
        box = np.asarray(boxes[np.random.randint(len(boxes))], dtype=np.float64)
        y0, y1 = self._window_range(box[1], box[3], ch, h)
        x0, x1 = self._window_range(box[0], box[2], cw, w)
        top = np.random.randint(y0, y1 + 1)
        left = np.random.randint(x0, x1 + 1)
        return T.CropTransform(left, top, cw, ch)

    @staticmethod
    def _window_range(lo: float, hi: float, crop: int, size: int):
        """Range of window starts in [0, size-crop] covering [lo, hi] (or its centre)."""
        max_start = size - crop
        start_min, start_max = int(np.ceil(hi)) - crop, int(np.floor(lo))
        if start_min > start_max:  # the box is larger than the window: keep its centre
            c = int((lo + hi) / 2)
            start_min, start_max = c - crop + 1, c
        start_min = min(max(start_min, 0), max_start)
        start_max = min(max(start_max, start_min), max_start)
        return start_min, start_max
