"""Reading images, including 16-bit and floating-point ones, into 8 bits per channel.

PIL converts a 16-bit or 32-bit image to RGB by *clipping* every value to 0-255, so a 16-bit
grayscale PNG (common in microscopy) becomes all white. :func:`read_image` instead scales such
an image by its own range: ``round(255 * (x - min) / (max - min))`` (all zeros for a constant
image), and refuses a floating-point image with NaN or infinite values, naming the file.
"""

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps

# PIL modes of one channel with more than 8 bits: 16-bit unsigned (PNG, TIFF, either byte
# order), 32-bit signed integer and 32-bit float (TIFF "F").
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


class ImageReadError(ValueError):
    """An image file cannot be used as it is; the message names the file and the reason."""


def to_8bit(image: Image.Image, file_name: str = "") -> Image.Image:
    """``image`` itself if PIL converts it correctly, else an 8-bit grayscale ("L") copy
    scaled by the image's own range (see the module docstring).

    Raises:
        ImageReadError: a floating-point image with NaN or infinite values.
    """
    if image.mode not in HIGH_BIT_DEPTH_MODES:
        return image
    x = np.asarray(image)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ImageReadError(
            f"Image {file_name!r} (PIL mode {image.mode!r}) has NaN or infinite values; "
            "cannot scale it to 8 bits"
        )
    x = x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    scaled = np.zeros(x.shape, np.uint8)
    if hi > lo:
        scaled = np.round((x - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return Image.fromarray(scaled)  # mode "L"


def open_image(file_name: str) -> Image.Image:
    """Open ``file_name`` with PIL, fully decoded and turned by its EXIF orientation."""
    with PathManager.open(file_name, "rb") as f:
        image = Image.open(f)
        image.load()  # decode now, while the file is open (a truncated file fails here)
    return ImageOps.exif_transpose(image)


def read_image(file_name: str, format: str = None) -> np.ndarray:
    """Like :func:`detectron2.data.detection_utils.read_image`, for 8-bit images too, plus
    16-bit and float images scaled to 8 bits by their range (:func:`to_8bit`).

    Returns:
        (H, W, C) uint8 array in ``format`` (e.g. "BGR", "RGB", "L"), as detectron2's.
    """
    image = to_8bit(open_image(file_name), file_name)
    return convert_PIL_to_numpy(image, format)
