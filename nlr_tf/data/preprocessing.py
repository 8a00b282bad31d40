"""Image decoding, resizing, per-backbone preprocessing and augmentation.

Plain TensorFlow functions used inside `tf.data` map functions (and by the
SavedModel export, which decodes image bytes in the graph). Pixel values go
through three stages:

1. `decode_image`: encoded JPEG/PNG bytes -> [H, W, 3] in [0, 255]
   (float32, or uint8 when `resize` follows).
2. `resize` (or `augment` in training): -> float32 [h, w, 3] in [0, 255],
   a fixed size.
3. `preprocess`: the scaling the backbone was trained with, identical to
   `keras.applications.<backbone>.preprocess_input`. It runs as the
   model's first layer (`BackbonePreprocessing`), not in the input
   pipeline: on the accelerator, and inside every exported model.

Augmentation uses stateless random ops only: every random choice is a
function of an explicit per-example seed, so a pipeline is reproducible
under `tf.data` determinism however its map calls are scheduled.
"""

from collections.abc import Sequence

import tensorflow as tf

# Training crops are taken from the image resized to this factor times the
# target size (e.g. 36x36 for 32x32, 336x336 for 299x299).
DEFAULT_CROP_SCALE = 1.125


def decode_image(image_bytes: tf.Tensor, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """Decodes JPEG or PNG bytes into [H, W, 3] with values in [0, 255].

    Grayscale images are expanded to three channels, an alpha channel is
    dropped, and only the first frame of an animated image is kept.

    Args:
        image_bytes: scalar `tf.string`. Encoded image.
        dtype: `tf.float32` or `tf.uint8`. Keep `tf.uint8` when `resize`
            comes next: it reads uint8 and returns float32, which saves a
            full pass over the image. Defaults to `tf.float32`.

    Returns:
        tensor [H, W, 3] of `dtype`.
    """
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image if dtype == tf.uint8 else tf.cast(image, dtype)


def resize(image: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """Bilinear resize of [H, W, 3] (or [B, H, W, 3]) to the fixed `image_size`.

    The aspect ratio is not kept: the papers' backbones take the whole image
    squashed to a square.

    Args:
        image: uint8 or float32 tensor [H, W, 3] or [B, H, W, 3], values
            in [0, 255].
        image_size: (height, width).

    Returns:
        float32 tensor of the same rank with the new spatial size.
    """
    return tf.image.resize(image, tuple(image_size), method="bilinear")


def augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    image_size: Sequence[int],
    random_flip: bool = False,
    crop_scale: float = DEFAULT_CROP_SCALE,
) -> tf.Tensor:
    """Random crop (and optionally a horizontal flip) to `image_size`.

    The image is resized to `crop_scale` times `image_size` and a window of
    `image_size` is cropped at a random position, i.e. a random translation
    of up to `(crop_scale - 1) * size` pixels. Every random choice is a
    stateless function of `seed`, so the result is reproducible.

    Args:
        image: uint8 or float32 tensor [H, W, 3], any size.
        seed: int32/int64 tensor of shape [2]. Per-example seed.
        image_size: (height, width) of the output.
        random_flip: bool. Also flip left-right with probability 1/2. Leave
            it off for data where a mirrored image is a different class
            (digits, text). Defaults to False.
        crop_scale: float >= 1. Size of the image the crop is taken from,
            relative to `image_size`. Defaults to 1.125.

    Returns:
        float32 tensor [height, width, 3], values in [0, 255].
    """
    if crop_scale < 1.0:
        raise ValueError(f"crop_scale must be >= 1. Received: crop_scale={crop_scale}")
    height, width = image_size
    padded = (int(round(height * crop_scale)), int(round(width * crop_scale)))
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    image = resize(image, padded)
    image = tf.image.stateless_random_crop(image, (height, width, 3), seed=crop_seed)
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image
