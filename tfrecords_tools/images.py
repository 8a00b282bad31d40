"""Reading, checking and encoding images for the writer (Pillow, no TF).

Every image is fully decoded once before it is written, so a corrupt or
truncated file is caught at conversion time and named by its row, instead
of failing a training run hours later. JPEG and PNG bytes are kept as they
are; other formats (and arrays) are re-encoded losslessly as PNG; JPEGs in
colour modes TensorFlow cannot decode (CMYK, YCCK) are re-encoded as RGB.
An EXIF orientation (a phone photo taken sideways) is applied to the pixels
and the image re-encoded, since TensorFlow's decoders ignore it. A PNG kept
as it is must hold every chunk through IEND, each with its right CRC: Pillow
decodes a PNG cut short near its end (in the compressed data's checksum, its
chunk's CRC or the IEND chunk), TensorFlow's decoder fails on it.
"""

import io
import struct
import zlib

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

from nlr_tf.data import files
from tfrecords_tools.records import Record

# Decode a truncated JPEG as an error, not as a grey bottom half.
Image.LOAD_TRUNCATED_IMAGES = False

_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_KEEP_MODES = {"JPEG": {"L", "RGB"}, "PNG": {"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"}}


class ImageError(ValueError):
    """An image that cannot be read or decoded."""


def encode_png(array: np.ndarray) -> bytes:
    """Encodes a uint8 array [H, W] or [H, W, 1|3|4] as PNG."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ImageError(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"image arrays must be [H, W] or [H, W, 1|3|4], got shape {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _reencode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, format="JPEG", quality=95)
    else:
        if img.mode not in _KEEP_MODES["PNG"]:
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        img.save(buf, format="PNG")
    return buf.getvalue()


def _check_png_chunks(data: bytes) -> None:
    """Raises `ImageError` unless the PNG `data` holds whole chunks with right CRCs up to and including IEND."""
    view, pos = memoryview(data), len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise ImageError("cannot decode image: PNG file is truncated (no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, pos)
        name = kind.decode("latin-1")
        end = pos + 12 + length
        if end > len(data):
            raise ImageError(f"cannot decode image: PNG file is truncated (in its {name!r} chunk)")
        if zlib.crc32(view[pos + 4 : end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            raise ImageError(f"cannot decode image: PNG chunk {name!r} has a wrong CRC")
        if kind == b"IEND":
            return
        pos = end


def check_image_bytes(data: bytes, max_side: int = 0, reduced_decode: bool = True) -> bytes:
    """Fully decodes `data`; returns bytes TensorFlow can decode as JPEG or PNG.

    Args:
        data: bytes. Encoded image in any format Pillow reads.
        max_side: int. When > 0, images whose longer side exceeds it are
            downscaled to it (aspect kept) and re-encoded.
        reduced_decode: bool. A JPEG to be downscaled is decoded at the
            smallest of 1/2, 1/4, 1/8 scale still at least the output size
            (libjpeg's DCT scaling, Pillow's `draft`), then resized exactly:
            1.31x (1.90x) the speed of this function on 1024-px JPEGs
            downscaled to 512 (299) px, the output a mean 0.22 (1.66) of 255
            levels from the exact path's
            (`benchmarks/convert.py`, docs/performance.md). Every block of the
            file is still decoded, so corrupt data is still found.

    Raises:
        ImageError: the bytes are empty, not an image, or corrupt.
    """
    if not data:
        raise ImageError("image is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        original = img.size
        target = _scaled(original, max_side) if max_side > 0 and max(original) > max_side else None
        if target and reduced_decode and fmt == "JPEG":
            img.draft(img.mode, target)
        img.load()
    except UnidentifiedImageError:
        raise ImageError("cannot decode image: not in an image format Pillow reads") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"cannot decode image: {e}") from None
    if img.width < 1 or img.height < 1:
        raise ImageError(f"image has no pixels ({img.width}x{img.height})")
    resized = False
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
        resized = True  # the pixels moved: re-encode
    if target:
        if (img.width > img.height) != (original[0] > original[1]):  # turned by its EXIF orientation
            target = target[::-1]
        img = img.resize(target, Image.BILINEAR)
        resized = True
    if fmt in _KEEP_MODES and img.mode in _KEEP_MODES[fmt] and not resized:
        if fmt == "PNG":
            _check_png_chunks(data)
        return data
    return _reencode(img, "JPEG" if fmt == "JPEG" else "PNG")


def _scaled(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled so its longer side is `max_side` (aspect kept)."""
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def read_record_image(record: Record, max_side: int = 0, reduced_decode: bool = True) -> bytes:
    """The checked encoded image of `record` (from its path, bytes or array); see `check_image_bytes`."""
    if record.image_array is not None:
        data = encode_png(record.image_array)
        return check_image_bytes(data, max_side, reduced_decode) if max_side else data
    if record.image_bytes is not None:
        return check_image_bytes(record.image_bytes, max_side, reduced_decode)
    if record.image_path is None:
        raise ImageError("record has no image")
    path = record.image_path
    try:
        if files.is_url(path):  # any TensorFlow filesystem (gs://...)
            data = files.read_bytes(path)
        else:
            with open(path, "rb") as f:
                data = f.read()
    except (FileNotFoundError, tf.errors.NotFoundError):
        raise ImageError(f"image file not found: {path}") from None
    except files.file_errors() as e:
        raise ImageError(f"cannot read image file {path}: {e}") from None
    try:
        return check_image_bytes(data, max_side, reduced_decode)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
