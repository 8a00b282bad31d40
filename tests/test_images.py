"""Images as the writer stores them: decodable by TensorFlow, upright."""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from tfrecords_tools.images import check_image_bytes


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
