"""`InputConfig`: the input options that every dataset of a run shares."""

import dataclasses
from typing import Optional

from nlr_tf.backbones import sizes
from nlr_tf.data.mixing import check_positive

# Shuffle buffer, in serialized records (images are decoded after the
# shuffle, so the buffer holds encoded bytes: ~20-40 KB per 299x299 JPEG).
DEFAULT_SHUFFLE_BUFFER = 10_000

# Files read concurrently by the interleave.
DEFAULT_CYCLE_LENGTH = 16


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """How the input pipeline reads, orders and preprocesses examples.

    Both builders (`pipeline.make_split_dataset` and
    `pipeline.make_train_dataset`) take one; what differs between their
    datasets (split or mix ratio, batch size, input context, extra keys)
    stays in their own arguments. Arguments are checked on construction.

    Args:
        backbone: str. One of `image_sizes.BACKBONES`; selects the default
            image size.
        image_size: int, (height, width) or None. Side of the images.
            Defaults to the backbone's default size.
        augment: bool. Random crops (see `preprocessing.augment`) in place
            of a plain resize. Meant for training. Defaults to False.
        random_flip: bool. With `augment`, also flip left-right at random;
            leave off for digits and text. Defaults to False.
        seed: int or None. Base seed of the shuffles and the augmentation.
            Defaults to random (drawn per dataset), or to 0 in
            deterministic mode.
        deterministic: bool. Reproducible element order and values (tests,
            debugging); slower. Evaluation is always in order. Defaults to
            False.
        shuffle_buffer: int. Records in each stream's shuffle buffer
            (training only). Defaults to 10,000.
        cycle_length: int. Files read concurrently per stream. Defaults to
            16.

    Raises:
        ValueError: a bad backbone, image size or shuffle buffer.

    Example:

    ```python
    input_config = InputConfig(backbone="inception_v3", seed=0, augment=True)
    train_ds = pipeline.make_train_dataset(info, 60, "9:1", input_config=input_config)
    ```
    """

    backbone: str
    image_size: Optional[sizes.ImageSize] = None
    augment: bool = False
    random_flip: bool = False
    seed: Optional[int] = None
    deterministic: bool = False
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    cycle_length: int = DEFAULT_CYCLE_LENGTH

    def __post_init__(self):
        sizes.image_size_hw(self.image_size, self.backbone)  # an unknown backbone or a bad size
        check_positive(self.shuffle_buffer, "shuffle_buffer")

    @property
    def image_hw(self) -> tuple[int, int]:
        """The image size as (height, width)."""
        return sizes.image_size_hw(self.image_size, self.backbone)
