"""The backbones: their names, input sizes and feature widths (no TensorFlow: flag definitions read them)."""

from collections.abc import Sequence
from typing import Optional, Union

BACKBONES = ("inception_v3", "resnet50", "small_cnn", "small_cnn_wide")
# The input resolution each backbone is usually trained at.
DEFAULT_IMAGE_SIZE = {"inception_v3": 299, "resnet50": 224, "small_cnn": 32, "small_cnn_wide": 32}
# The smallest input side each backbone accepts.
MIN_IMAGE_SIZE = {"inception_v3": 75, "resnet50": 32, "small_cnn": 8, "small_cnn_wide": 8}
# The small CNNs' width: filters of the first stage (the features have four times as many).
SMALL_CNN_WIDTH = {"small_cnn": 16, "small_cnn_wide": 32}
# Pooled feature width of the keras.applications backbones.
FEATURE_DIM = {"inception_v3": 2048, "resnet50": 2048}

ImageSize = Union[int, Sequence[int]]


def check_backbone(backbone: str) -> str:
    """Returns `backbone` if known, else raises a ValueError naming it."""
    if backbone not in BACKBONES:
        raise ValueError(f"Unknown backbone; expected one of {', '.join(BACKBONES)}. Received: backbone={backbone!r}")
    return backbone


def default_image_size(backbone: str) -> tuple[int, int]:
    """The default (height, width) of `backbone`'s inputs."""
    size = DEFAULT_IMAGE_SIZE[check_backbone(backbone)]
    return size, size


def image_size_hw(image_size: Optional[ImageSize], backbone: str) -> tuple[int, int]:
    """Normalizes `image_size` (int, (h, w) or None for the default) to (h, w).

    Args:
        image_size: int, pair of ints or None. None takes the backbone's
            default size.
        backbone: str. One of `BACKBONES`.

    Raises:
        ValueError: an unknown backbone or a non-positive size.
    """
    if image_size is None:
        return default_image_size(backbone)
    check_backbone(backbone)
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (height, width). Received: image_size={image_size!r}")
    return size
