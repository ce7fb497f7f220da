"""16-bit and float images are scaled to 8 bits by their range, through the shared mapper."""

import numpy as np
import pytest
from PIL import Image

from instseg_d2.data import InstanceDatasetMapper
from instseg_d2.data.image_io import ImageReadError, read_image

# a 2 x 3 image whose range is 100..4195: scaled to 0..255 by (x - 100) * 255 / 4095
RAW = np.array([[100, 1100, 2148], [4195, 100, 3171]])
EXPECTED = np.array([[0, 62, 128], [255, 0, 191]], dtype=np.uint8)


def _save(path, array):
    Image.fromarray(array).save(path)  # uint16 -> "I;16", int32 -> "I", float32 -> "F"
    return str(path)


def _write_16bit_big_endian_tiff(path):
    """A 16-bit big-endian ("I;16B") grayscale TIFF (numpy has no such PIL mode)."""
    Image.frombytes("I;16B", (3, 2), RAW.astype(">u2").tobytes()).save(path)
    return str(path)


@pytest.mark.parametrize(
    "name, make, mode",
    [
        ("png16.png", lambda p: _save(p, RAW.astype(np.uint16)), "I;16"),
        ("tiff16.tif", lambda p: _save(p, RAW.astype(np.uint16)), "I;16"),
        ("tiff16b.tif", _write_16bit_big_endian_tiff, "I;16B"),
        ("int32.tif", lambda p: _save(p, RAW.astype(np.int32)), "I"),
        ("float.tif", lambda p: _save(p, RAW.astype(np.float32) / 7.0), "F"),
    ],
)
def test_high_bit_depth_scaled_by_range(tmp_path, name, make, mode):
    path = make(tmp_path / name)
    with Image.open(path) as im:
        assert im.mode == mode  # the file really is of that mode
    gray = read_image(path, format="L")[..., 0]
    np.testing.assert_array_equal(gray, EXPECTED)
    bgr = read_image(path, format="BGR")
    assert bgr.shape == (2, 3, 3) and bgr.dtype == np.uint8
    np.testing.assert_array_equal(bgr[..., 0], EXPECTED)


def test_8bit_and_constant_images(tmp_path):
    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    out = read_image(_save(tmp_path / "rgb.png", rgb), format="RGB")
    np.testing.assert_array_equal(out, rgb)  # 8-bit images unchanged
    flat = read_image(_save(tmp_path / "flat.png", np.full((2, 3), 700, np.uint16)), "L")
    assert (flat == 0).all()  # a constant 16-bit image has no range: black, not white


def test_float_with_nan_refused_naming_file_and_mode(tmp_path):
    x = RAW.astype(np.float32)
    x[0, 0] = np.nan
    path = _save(tmp_path / "nan.tif", x)
    with pytest.raises(ImageReadError, match=r"nan\.tif.*mode 'F'.*NaN"):
        read_image(path, format="BGR")


def test_mapper_reads_16bit_image(tmp_path):
    path = _save(tmp_path / "cells.png", RAW.astype(np.uint16))
    mapper = InstanceDatasetMapper(False, augmentations=[], image_format="BGR")
    out = mapper({"file_name": path, "height": 2, "width": 3})
    image = out["image"].numpy()  # (3, H, W) BGR
    for channel in image:
        np.testing.assert_array_equal(channel, EXPECTED)  # not all white (clipped at 255)
