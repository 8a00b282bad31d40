"""Images as the writer stores them: decodable by TensorFlow, upright."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfrecords_tools.images import ImageError, check_image_bytes


def _sideways_photo(orientation: int) -> bytes:
    """A 16x8 JPEG, left half red and right half blue, with an EXIF orientation tag."""
    pixels = np.zeros((8, 16, 3), np.uint8)
    pixels[:, :8] = (255, 0, 0)
    pixels[:, 8:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def test_exif_orientation_is_applied_to_the_pixels():
    # Orientation 6: the camera was turned; the image must be turned 90 degrees clockwise to be upright,
    # so its left half (red) ends on top.
    stored = check_image_bytes(_sideways_photo(6))
    image = tf.io.decode_jpeg(stored).numpy()
    assert image.shape == (16, 8, 3)
    assert image[:6, :, 0].min() > 200 and image[:6, :, 2].max() < 60  # top: red
    assert image[10:, :, 2].min() > 200 and image[10:, :, 0].max() < 60  # bottom: blue
    assert Image.open(io.BytesIO(stored)).getexif().get(0x0112, 1) == 1
    # An upright photo is stored byte for byte.
    upright = _sideways_photo(1)
    assert check_image_bytes(upright) == upright


def test_a_png_cut_short_anywhere_is_an_error_where_tensorflow_would_fail():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    assert check_image_bytes(data) == data and check_image_bytes(data + b"trailing") == data + b"trailing"
    for cut in range(len(data)):
        with pytest.raises(ImageError):
            check_image_bytes(data[:cut])
    # Cut in its last 20 bytes (the end of the compressed pixels' checksum, their chunk's CRC, the IEND chunk),
    # it still gives Pillow all its pixels, but TensorFlow's decoder reads to IEND and fails.
    for cut in range(len(data) - 20, len(data)):
        with pytest.raises(ImageError, match="PNG file is truncated"):
            check_image_bytes(data[:cut])
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_png(data[:cut])
    flipped = bytearray(data)
    flipped[-1] ^= 1  # the IEND chunk's CRC
    with pytest.raises(ImageError, match="PNG chunk 'IEND' has a wrong CRC"):
        check_image_bytes(bytes(flipped))
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_png(bytes(flipped))


def _photo_1024() -> bytes:
    """A 1024x683 JPEG of one of scikit-learn's bundled photographs."""
    import sklearn.datasets

    photo = Image.fromarray(sklearn.datasets.load_sample_images().images[0]).resize((1024, 683), Image.BICUBIC)
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_a_reduced_scale_jpeg_decode_gives_the_same_size_and_nearly_the_same_pixels():
    data = _photo_1024()
    for side in (299, 512, 700):
        fast = tf.io.decode_jpeg(check_image_bytes(data, side)).numpy().astype(np.float32)
        exact = tf.io.decode_jpeg(check_image_bytes(data, side, reduced_decode=False)).numpy().astype(np.float32)
        assert fast.shape == exact.shape == (round(683 * side / 1024), side, 3)
        assert np.abs(fast - exact).mean() < 3.0  # of 255 levels (benchmarks/convert.py: a mean 0.22)
    # A file cut short is still found corrupt: every block is still decoded.
    with pytest.raises(ImageError):
        check_image_bytes(data[: len(data) // 2], 299)
    # Turned by its EXIF orientation, the downscaled image is upright at the scaled size.
    turned = tf.io.decode_jpeg(check_image_bytes(_sideways_photo(6), 8)).numpy()
    assert turned.shape == (8, 4, 3)
