"""The noisy:clean mixing ratio and the batch sizes it splits.

`mix_counts` says how many examples of each split a batch holds; the
training stream (`pipeline.make_train_dataset`) and the trainer's checks
both use it.
"""

import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from nlr_tf.data import schema

MixRatio = Union[str, Sequence[int]]


def parse_mix_ratio(mix_ratio: MixRatio) -> tuple[int, int]:
    """Parses a noisy:clean ratio given as `"9:1"` or `(9, 1)`.

    Args:
        mix_ratio: str `"n:c"` or a pair of ints. Parts are non-negative
            integers, not both zero; `"1:0"` is noisy only, `"0:1"` clean
            only.

    Returns:
        (n, c) divided by their greatest common divisor.

    Raises:
        ValueError: a malformed ratio.
    """
    parts: list[int] = []
    try:
        if isinstance(mix_ratio, str):
            parts = [int(p.strip()) for p in mix_ratio.split(":")]
        elif all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in mix_ratio):
            parts = [int(p) for p in mix_ratio]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or min(parts) < 0 or sum(parts) == 0:
        raise ValueError(
            "mix_ratio must be two non-negative integers, not both zero, as 'n:c' or (n, c). "
            f"Received: mix_ratio={mix_ratio!r}"
        )
    g = math.gcd(*parts)
    return parts[0] // g, parts[1] // g


def mix_counts(batch_size: int, mix_ratio: MixRatio) -> tuple[int, int]:
    """Numbers of noisy and clean examples in a batch of `batch_size`.

    Args:
        batch_size: int. Examples per batch (per replica).
        mix_ratio: str or pair of ints. See `parse_mix_ratio`.

    Returns:
        (num_noisy, num_clean), summing to `batch_size`.

    Raises:
        ValueError: `batch_size` cannot be split exactly in that ratio.
    """
    n, c = parse_mix_ratio(mix_ratio)
    check_positive(batch_size, "batch_size")
    if batch_size % (n + c):
        raise ValueError(
            f"A batch of {batch_size} examples per replica cannot be split exactly in the noisy:clean "
            f"ratio {n}:{c}; use a per-replica batch size that is a multiple of {n + c}. "
            f"Received: batch_size={batch_size}, mix_ratio={mix_ratio!r}"
        )
    k = batch_size // (n + c)
    return k * n, k * c


def check_mix_splits(info: schema.DatasetInfo, mix_ratio: MixRatio, noisy_split: str, clean_split: str) -> None:
    """Raises a DatasetError naming a split that `mix_ratio` takes examples from and `info` lacks."""
    n, c = parse_mix_ratio(mix_ratio)
    for split, part, role in ((noisy_split, n, "noisy"), (clean_split, c, "clean")):
        if part and not info.has_split(split):
            have = ", ".join(f"{k} ({v.num_records} records)" for k, v in sorted(info.splits.items()))
            raise schema.DatasetError(
                f"mix_ratio {n}:{c} takes {role} examples from split {split!r}, but dataset {info.path!r} "
                f"has no records in a split {split!r} (it has: {have}); choose another {role}_split "
                f"or a ratio without a {role} part"
            )


def check_positive(value: Any, name: str) -> None:
    """Raises a ValueError naming `name` unless `value` is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def per_replica_batch_size(global_batch_size: int, input_context: Optional[tf.distribute.InputContext]) -> int:
    """The batch size of one replica: all of `global_batch_size` without `input_context`."""
    check_positive(global_batch_size, "global_batch_size")
    if input_context is None:
        return int(global_batch_size)
    # Raises a ValueError when the global batch does not divide evenly.
    return input_context.get_per_replica_batch_size(int(global_batch_size))
