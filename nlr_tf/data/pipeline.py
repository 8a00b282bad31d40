"""The tf.data input pipeline shared by training and evaluation.

Every element is a dict of batched tensors:

- `image`: float32 [B, H, W, 3], RGB in [0, 255], resized for the backbone
  (its own scaling is the model's first layer), or, read from a feature
  cache, `features`: float32 [B, F] pooled backbone features.
- `noisy_labels`: float32 [B, d], multi-hot noisy labels.
- `verified_labels`: float32 [B, d], 1 where a class is verified present.
- `verified_mask`: float32 [B, d], 1 where a class is verified present or
  absent; 0 (unverified) entries are ignored by every loss and metric.
- `is_clean`: float32 [B], 1 for examples drawn from the clean split.
- `id` (only with `with_ids=True`): string [B].
- `true_labels`, `has_true` (only with `with_true=True`, for evaluation
  reports on the built-in benchmark): float32 [B, d] and bool [B].
  Training never reads `label/true`.

Two entry points:

- `make_split_dataset`: one split, for evaluation (every record exactly
  once, in a deterministic order, remainder kept) or for training on one
  split (shuffled, repeated).
- `make_train_dataset`: the mixed training stream. Every batch of B
  examples per replica holds exactly B·n/(n+c) examples of the noisy split
  followed by B·c/(n+c) of the clean split (`mix_ratio="n:c"`, 9:1 in both
  papers).

Under a `tf.distribute` strategy build the training stream once per input
pipeline with `distribute_train_dataset`, a thin wrapper of

    strategy.distribute_datasets_from_function(
        lambda ctx: make_train_dataset(info, global_batch_size, "9:1",
                                       input_context=ctx, ...))

Each input pipeline reads its own shard of the files and batches
`ctx.get_per_replica_batch_size(global_batch_size)` examples per replica,
so the mixing ratio is exact on every replica. Do not pass a globally
batched mixed dataset to `strategy.experimental_distribute_dataset`: it
cuts each global batch into consecutive slices, and the first replica
would get only noisy examples.

Example:

```python
info = schema.load_dataset_info("/data/coco_noisy")
strategy = tf.distribute.MirroredStrategy()
train_ds = pipeline.distribute_train_dataset(
    strategy, info, global_batch_size=60, mix_ratio="9:1",
    backbone="inception_v3")
val_ds = pipeline.make_split_dataset(
    info, "val", 64, backbone="inception_v3", training=False)
```
"""

import functools
import math
import random
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from nlr_tf.data import parsing, preprocessing, schema

AUTOTUNE = tf.data.AUTOTUNE

# Shuffle buffer, in serialized records (images are decoded after the
# shuffle, so the buffer holds encoded bytes: ~20-40 KB per 299x299 JPEG).
DEFAULT_SHUFFLE_BUFFER = 10_000

# Files read concurrently by the interleave.
DEFAULT_CYCLE_LENGTH = 16

# Records parsed per vectorized parse call.
PARSE_BLOCK = 64

MixRatio = Union[str, Sequence[int]]


# === Mixing ratio and batch sizes ===


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
    _check_positive(batch_size, "batch_size")
    if batch_size % (n + c):
        raise ValueError(
            f"A batch of {batch_size} examples per replica cannot be split exactly in the noisy:clean "
            f"ratio {n}:{c}; use a per-replica batch size that is a multiple of {n + c}. "
            f"Received: batch_size={batch_size}, mix_ratio={mix_ratio!r}"
        )
    k = batch_size // (n + c)
    return k * n, k * c


def _check_positive(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")


def _per_replica_batch_size(global_batch_size: int, input_context: Optional[tf.distribute.InputContext]) -> int:
    _check_positive(global_batch_size, "global_batch_size")
    if input_context is None:
        return int(global_batch_size)
    # Raises a ValueError when the global batch does not divide evenly.
    return input_context.get_per_replica_batch_size(int(global_batch_size))


# === Seeds and options ===

# Salts of the stages that draw random numbers.
_FILE_SHUFFLE, _RECORD_SHUFFLE, _AUGMENT = 1, 2, 3


def _resolve_seed(seed: Optional[int], deterministic: bool) -> int:
    """The base seed: the given one, 0 in deterministic mode, else random."""
    if seed is not None:
        return int(seed)
    if deterministic:
        return 0
    return random.SystemRandom().randrange(2**31 - 1)


def _derive_seed(base: int, *salt: int) -> int:
    """A seed for one use (a split, a pipeline, a stage) of `base`."""
    return int(np.random.SeedSequence([base, *salt]).generate_state(1)[0] % (2**31 - 1))


def _options(deterministic: bool, sharded: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = True
    # Parallelism comes from the parallel maps, one element per call; ops
    # inside a call stay on one thread, next to their data.
    options.threading.max_intra_op_parallelism = 1
    if sharded:
        # Sharded by `input_context` here; a strategy must not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _is_sharded(input_context: Optional[tf.distribute.InputContext]) -> bool:
    return input_context is not None and input_context.num_input_pipelines > 1


# === One split: records -> examples ===


def _split_files(info: schema.DatasetInfo, split: str) -> list[str]:
    files = info.split_files(split)  # A DatasetError naming a missing split.
    if not files or info.splits[split].num_records == 0:
        raise schema.DatasetError(f"split {split!r} of dataset {info.path!r} has no records")
    return files


def _read_records(
    files: Sequence[str],
    *,
    training: bool,
    input_context: Optional[tf.distribute.InputContext],
    seed: int,
    deterministic: bool,
    cycle_length: int,
) -> tf.data.Dataset:
    """Serialized records of `files`, sharded for `input_context`.

    Files are sharded across input pipelines when there are at least as many
    files as pipelines. Otherwise every pipeline reads all files in the same
    deterministic order and keeps every k-th record: still disjoint shards
    that cover the split, but each pipeline reads the whole split; write
    more shards than pipelines to avoid it.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    record_sharding = num_pipelines > len(files)
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if num_pipelines > 1 and not record_sharding:
        # Shard the file names before anything random happens, so that the
        # pipelines' shards are disjoint and together cover the split.
        ds = ds.shard(num_pipelines, pipeline_id)
    if training and not record_sharding:
        # Visit the files in a new order every epoch: cheap mixing on top of
        # the record shuffle buffer. Not when sharding records, which needs
        # the same record order in every pipeline.
        ds = ds.shuffle(len(files), seed=_derive_seed(seed, _FILE_SHUFFLE), reshuffle_each_iteration=True)
    # Read several files concurrently, one record from each in turn. The
    # order is deterministic when asked for, and always for evaluation and
    # for record sharding.
    ds = ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(cycle_length, len(files))),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic or not training or record_sharding,
    )
    if record_sharding:
        ds = ds.shard(num_pipelines, pipeline_id)
    return ds


class _BlockParser:
    """Parses a block of serialized records into per-record features.

    `is_clean` is one value for every record, or a pattern with one value
    per position of a block (blocks then have exactly that length).
    """

    def __init__(
        self,
        num_classes: int,
        is_clean: Union[bool, Sequence[bool]],
        with_ids: bool,
        with_true: bool,
        feature_dim: int = 0,
        feature_dtype: str = "float32",
    ):
        self.num_classes = num_classes
        self.is_clean = is_clean
        self.with_ids = with_ids
        self.with_true = with_true
        self.feature_dim = feature_dim
        self.feature_dtype = feature_dtype

    def __call__(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        features = parsing.parse_examples(
            serialized,
            self.num_classes,
            with_ids=self.with_ids,
            with_true=self.with_true,
            feature_dim=self.feature_dim,
            feature_dtype=self.feature_dtype,
        )
        if isinstance(self.is_clean, bool):
            features["is_clean"] = tf.fill(tf.shape(serialized), 1.0 if self.is_clean else 0.0)
        else:
            features["is_clean"] = tf.constant([1.0 if c else 0.0 for c in self.is_clean], tf.float32)
        return features


class _ImageDecoder:
    """Replaces `image_bytes` by the decoded, resized `image` (RGB in [0, 255]).

    The backbone's scaling is not applied here but by the model's first
    layer, on the accelerator.
    """

    def __init__(self, image_size: tuple[int, int], backbone: str, random_flip: bool, augment_seed: int):
        self.image_size = image_size
        self.backbone = backbone
        self.random_flip = random_flip
        self.augment_seed = augment_seed

    def decode(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = dict(features)
        # uint8 into resize, which returns float32: no separate cast pass.
        image = preprocessing.decode_image(features.pop("image_bytes"), dtype=tf.uint8)
        features["image"] = preprocessing.resize(image, self.image_size)
        return features

    def decode_augmented(self, index: tf.Tensor, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = dict(features)
        image = preprocessing.decode_image(features.pop("image_bytes"), dtype=tf.uint8)
        # The example's position in the (repeated) stream makes its seed:
        # reproducible however the parallel map schedules its calls.
        seed = tf.stack([tf.constant(self.augment_seed, tf.int64), index])
        features["image"] = preprocessing.augment(image, seed, self.image_size, random_flip=self.random_flip)
        return features


def _serialized_records(
    info: schema.DatasetInfo,
    split: str,
    *,
    training: bool,
    input_context: Optional[tf.distribute.InputContext],
    shuffle_buffer: int,
    seed: int,
    deterministic: bool,
    cycle_length: int,
) -> tf.data.Dataset:
    """Serialized records of one split: sharded, and for training shuffled
    and repeated."""
    files = _split_files(info, split)
    # Each pipeline draws different random numbers from the same base seed.
    seed = _derive_seed(seed, input_context.input_pipeline_id if input_context else 0)
    ds = _read_records(
        files,
        training=training,
        input_context=input_context,
        seed=seed,
        deterministic=deterministic,
        cycle_length=cycle_length,
    )
    if not training:
        return ds
    # Shuffle serialized records, before decoding: the buffer holds encoded
    # bytes and filling it decodes nothing. Shuffle *before* repeat so that
    # every record is seen exactly once per epoch, in a new order every
    # epoch.
    ds = ds.shuffle(shuffle_buffer, seed=_derive_seed(seed, _RECORD_SHUFFLE), reshuffle_each_iteration=True)
    # Repeat before parsing and batching: batches run across epoch
    # boundaries (no partial batch per epoch) and the parallel maps never
    # drain at an epoch's end.
    return ds.repeat()


def _examples(
    records: tf.data.Dataset,
    *,
    num_classes: int,
    block_size: int,
    is_clean: Union[bool, Sequence[bool]],
    with_ids: bool,
    with_true: bool,
    image_size: tuple[int, int],
    backbone: str,
    augment: bool,
    random_flip: bool,
    seed: int,
    ordered: bool,
    feature_dim: int = 0,
    feature_dtype: str = "float32",
    first_index: int = 0,
) -> tf.data.Dataset:
    """Serialized records -> unbatched example dicts, in the same order.

    Records of a feature cache (`feature_dim` > 0) carry `features` (stored
    as `feature_dtype`, parsed to float32) and skip the image stages.
    `first_index` is the first record's position in the stream (records
    skipped before it keep their augmentation seeds).
    """
    # Parse blocks of records with one vectorized call, then split them
    # again: several times cheaper per record than parse_single_example,
    # and each block's label index lists become dense vectors in one
    # scatter. A pattern of is_clean values needs whole blocks; otherwise
    # the last partial block (evaluation) is kept.
    parser = _BlockParser(
        num_classes,
        is_clean=is_clean,
        with_ids=with_ids,
        with_true=with_true,
        feature_dim=feature_dim,
        feature_dtype=feature_dtype,
    )
    ds = records.batch(block_size, drop_remainder=not isinstance(is_clean, bool))
    ds = ds.map(parser, num_parallel_calls=AUTOTUNE, deterministic=ordered).unbatch()
    if feature_dim:
        return ds
    # Decode, resize (or crop), preprocess: one image per call, in
    # parallel; the bulk of the work.
    decoder = _ImageDecoder(image_size, backbone, random_flip, augment_seed=_derive_seed(seed, _AUGMENT))
    if augment:
        # Number the examples (after repeat: new numbers every epoch) to
        # seed their augmentation statelessly.
        return ds.enumerate(start=first_index).map(
            decoder.decode_augmented, num_parallel_calls=AUTOTUNE, deterministic=ordered
        )
    return ds.map(decoder.decode, num_parallel_calls=AUTOTUNE, deterministic=ordered)


def _check_args(backbone: str, image_size: Optional[preprocessing.ImageSize], shuffle_buffer: int) -> tuple[int, int]:
    """Validates the common arguments; returns the image size (h, w)."""
    size = preprocessing.image_size_hw(image_size, backbone)
    _check_positive(shuffle_buffer, "shuffle_buffer")
    return size


# === Public API ===


def make_split_dataset(
    info: schema.DatasetInfo,
    split: str,
    global_batch_size: int,
    *,
    backbone: str,
    training: bool,
    image_size: Optional[preprocessing.ImageSize] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: Optional[int] = None,
    deterministic: bool = False,
    augment: bool = False,
    random_flip: bool = False,
    with_ids: bool = False,
    with_true: bool = False,
    is_clean: Optional[bool] = None,
    drop_remainder: Optional[bool] = None,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
) -> tf.data.Dataset:
    """Batches of one split, for evaluation or for training on that split.

    Chain: list shards -> shard across input pipelines -> (training) shuffle
    files -> parallel interleave of the files -> (training) shuffle records
    -> (training) repeat -> parse blocks of records -> map (decode, resize
    or augment, preprocess) -> batch -> prefetch.

    For evaluation (`training=False`) there is no shuffle and no repeat,
    every record (of this input pipeline's shard) comes exactly once, in a
    deterministic order, and the last partial batch is kept.

    Args:
        info: `DatasetInfo`. The dataset (from `schema.load_dataset_info`).
        split: str. Split name, e.g. `"val"`.
        global_batch_size: int. Batch size summed over replicas; each input
            pipeline batches `input_context.get_per_replica_batch_size()`
            of it (all of it without `input_context`).
        backbone: str. One of `image_sizes.BACKBONES`; selects the
            preprocessing and the default image size.
        training: bool. Shuffle and repeat forever (True) or read once in
            order (False).
        image_size: int or (height, width). Defaults to the backbone's
            default size.
        input_context: `tf.distribute.InputContext` or None. This pipeline's
            place among all input pipelines (from
            `distribute_datasets_from_function`).
        shuffle_buffer: int. Records in the shuffle buffer (training only).
            Defaults to 10,000.
        seed: int or None. Base seed of the shuffles and augmentation.
            Defaults to random, or to 0 in deterministic mode.
        deterministic: bool. Reproducible element order and values (tests,
            debugging); slower. Evaluation is always in order. Defaults to
            False.
        augment: bool. Random crops (see `preprocessing.augment`). Meant for
            training. Defaults to False.
        random_flip: bool. With `augment`, also flip left-right at random;
            leave off for digits and text. Defaults to False.
        with_ids: bool. Include the string `id`. Defaults to False.
        with_true: bool. Include `true_labels` and `has_true` (evaluation
            reports only). Defaults to False.
        is_clean: bool or None. Value of `is_clean`. Defaults to True for
            every split except `"noisy"`.
        drop_remainder: bool or None. Drop a last partial batch. Defaults to
            `training` (static batch shapes for training; evaluation keeps
            every record).
        cycle_length: int. Files read concurrently. Defaults to 16.

    Returns:
        A `tf.data.Dataset` of element dicts (see the module docstring).

    Raises:
        DatasetError: the split is missing or empty.
        ValueError: a bad backbone, image size or batch size.
    """
    size = _check_args(backbone, image_size, shuffle_buffer)
    batch_size = _per_replica_batch_size(global_batch_size, input_context)
    seed = _resolve_seed(seed, deterministic)
    seed = _derive_seed(seed, 0)
    records = _serialized_records(
        info,
        split,
        training=training,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        deterministic=deterministic,
        cycle_length=cycle_length,
    )
    ds = _examples(
        records,
        num_classes=info.num_classes,
        block_size=PARSE_BLOCK,
        is_clean=(split != "noisy") if is_clean is None else bool(is_clean),
        with_ids=with_ids,
        with_true=with_true,
        image_size=size,
        backbone=backbone,
        augment=augment,
        random_flip=random_flip,
        seed=_derive_seed(seed, input_context.input_pipeline_id if input_context else 0),
        ordered=deterministic or not training,
        feature_dim=info.feature_dim,
        feature_dtype=info.feature_dtype,
    )
    if not training and not _is_sharded(input_context):
        # Fails loudly if the shards hold other counts than dataset.json
        # says, and tells Keras the number of evaluation steps.
        ds = ds.apply(tf.data.experimental.assert_cardinality(info.splits[split].num_records))
    # Batch after the per-image map: decoding runs per image in parallel,
    # batching stacks the fixed-size results.
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    # Prefetch last, so that input work overlaps the consumer's step.
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(_options(deterministic or not training, _is_sharded(input_context)))


def make_train_dataset(
    info: schema.DatasetInfo,
    global_batch_size: int,
    mix_ratio: MixRatio = "9:1",
    *,
    backbone: str,
    image_size: Optional[preprocessing.ImageSize] = None,
    noisy_split: str = "noisy",
    clean_split: str = "clean",
    input_context: Optional[tf.distribute.InputContext] = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: Optional[int] = None,
    deterministic: bool = False,
    augment: bool = False,
    random_flip: bool = False,
    with_ids: bool = False,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    """The infinite training stream, mixing two splits exactly in every batch.

    With B the per-replica batch size and `mix_ratio` n:c, every batch holds
    B·n/(n+c) examples of `noisy_split` (`is_clean` = 0) followed by
    B·c/(n+c) examples of `clean_split` (`is_clean` = 1), in every batch of
    every input pipeline. Chain: per split, list shards -> shard -> shuffle
    files -> parallel interleave -> shuffle records -> repeat; then a fixed
    pattern takes each batch's records from the two splits -> parse blocks
    of one batch -> map (decode, resize or augment, preprocess; order kept)
    -> batch -> prefetch. A ratio with a zero
    part reads only the other split (`"1:0"`: the noisy baseline; `"0:1"`:
    training or fine-tuning on the clean split), and the unused split need
    not exist.

    Each stream visits each of its records exactly once per epoch (shuffle
    before repeat); the clean stream, being smaller, runs through more
    epochs.

    Args:
        info: `DatasetInfo`. The dataset.
        global_batch_size: int. Batch size summed over replicas; each input
            pipeline batches `input_context.get_per_replica_batch_size()`
            of it, which must be a multiple of n + c (of the reduced ratio).
        mix_ratio: str `"n:c"` or (n, c). Noisy to clean examples per batch.
            Defaults to `"9:1"` (both papers).
        backbone: str. One of `image_sizes.BACKBONES`.
        image_size: int or (height, width). Defaults to the backbone's.
        noisy_split: str. Split of the noisy part. Defaults to `"noisy"`.
        clean_split: str. Split of the clean part, e.g. `"clean_all"` for
            the clean upper bound. Defaults to `"clean"`.
        input_context: `tf.distribute.InputContext` or None. See
            `distribute_train_dataset`.
        shuffle_buffer: int. Records in each stream's shuffle buffer.
            Defaults to 10,000.
        seed: int or None. Base seed. Defaults to random, or to 0 in
            deterministic mode.
        deterministic: bool. Reproducible batches (tests); slower. Defaults
            to False.
        augment: bool. Random crops. Defaults to False.
        random_flip: bool. With `augment`, random left-right flips.
            Defaults to False.
        with_ids: bool. Include the string `id`. Defaults to False.
        cycle_length: int. Files read concurrently per stream. Defaults to
            16.
        skip_batches: int. Batches of this stream already trained on (a
            resumed run): the stream starts after them, as it would have
            gone on. They are skipped as serialized records, before any
            parsing or decoding. Defaults to 0.

    Returns:
        An infinite `tf.data.Dataset` of element dicts (module docstring).

    Raises:
        ValueError: a bad ratio, or a batch size that does not split
            exactly in that ratio (the message names both).
        DatasetError: a split that the ratio needs is missing or empty.
    """
    size = _check_args(backbone, image_size, shuffle_buffer)
    n, c = parse_mix_ratio(mix_ratio)
    batch_size = _per_replica_batch_size(global_batch_size, input_context)
    num_noisy, num_clean = mix_counts(batch_size, mix_ratio)
    for split, part, role in ((noisy_split, n, "noisy"), (clean_split, c, "clean")):
        if part and not info.has_split(split):
            have = ", ".join(f"{k} ({v.num_records} records)" for k, v in sorted(info.splits.items()))
            raise schema.DatasetError(
                f"mix_ratio {n}:{c} takes {role} examples from split {split!r}, but dataset {info.path!r} "
                f"has no records in a split {split!r} (it has: {have}); choose another {role}_split "
                f"or a ratio without a {role} part"
            )
    seed = _resolve_seed(seed, deterministic)
    records = functools.partial(
        _serialized_records,
        info,
        training=True,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        deterministic=deterministic,
        cycle_length=cycle_length,
    )
    if num_noisy and num_clean:
        # Take num_noisy records from the noisy stream, then num_clean from
        # the clean one, and so on: blocks of batch_size records in the
        # exact ratio. Parsing keeps each block whole and the image map
        # keeps the order, so every batch below is one block:
        # [noisy..., clean...]. Mixing serialized records lets one parse
        # and one image map serve both splits. (Decoding and batching each
        # split separately, then concatenating within the batch, gives the
        # same mix but copies every image once more and runs twice the
        # parallel stages: ~25% more CPU time per image.)
        noisy = records(noisy_split, seed=_derive_seed(seed, 0))
        clean = records(clean_split, seed=_derive_seed(seed, 1))
        choice = tf.data.Dataset.from_tensor_slices(tf.constant([0] * num_noisy + [1] * num_clean, tf.int64))
        ds = tf.data.Dataset.choose_from_datasets([noisy, clean], choice.repeat(), stop_on_empty_dataset=True)
        is_clean = [False] * num_noisy + [True] * num_clean
        block_size = batch_size
    elif num_noisy:
        ds, is_clean, block_size = records(noisy_split, seed=_derive_seed(seed, 0)), False, PARSE_BLOCK
    else:
        ds, is_clean, block_size = records(clean_split, seed=_derive_seed(seed, 1)), True, PARSE_BLOCK
    # One record per example, and batches are whole blocks: skipping records skips whole batches.
    ds = ds.skip(skip_batches * batch_size)
    ds = _examples(
        ds,
        num_classes=info.num_classes,
        block_size=block_size,
        is_clean=is_clean,
        with_ids=with_ids,
        with_true=False,
        image_size=size,
        backbone=backbone,
        augment=augment,
        random_flip=random_flip,
        seed=_derive_seed(seed, 2, input_context.input_pipeline_id if input_context else 0),
        # The mixed blocks must stay in order through the image map.
        ordered=deterministic or not isinstance(is_clean, bool),
        feature_dim=info.feature_dim,
        feature_dtype=info.feature_dtype,
        first_index=skip_batches * batch_size,
    )
    # drop_remainder only makes the batch shape static: the stream is
    # infinite, nothing is dropped.
    ds = ds.batch(batch_size, drop_remainder=True)
    # Prefetch last, so that input work overlaps the training step.
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(_options(deterministic, _is_sharded(input_context)))


def distribute_train_dataset(
    strategy: tf.distribute.Strategy,
    info: schema.DatasetInfo,
    global_batch_size: int,
    mix_ratio: MixRatio = "9:1",
    skip_steps: int = 0,
    **kwargs: Any,
) -> tf.distribute.DistributedDataset:
    """The mixed training stream distributed over `strategy`'s replicas.

    Builds one `make_train_dataset` per input pipeline (one per worker)
    through `strategy.distribute_datasets_from_function`; each batches
    `global_batch_size / num_replicas` examples per replica, mixed exactly.

    Args:
        strategy: `tf.distribute.Strategy`.
        info: `DatasetInfo`. The dataset.
        global_batch_size: int. Batch size summed over all replicas.
        mix_ratio: str or (n, c). See `make_train_dataset`.
        skip_steps: int. Steps already trained on this stream (a resumed
            run): each input pipeline skips the batches its replicas took
            in them. Defaults to 0.
        **kwargs: further keyword arguments of `make_train_dataset`
            (`backbone` is required).

    Returns:
        A `tf.distribute.DistributedDataset`.
    """

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Each step takes one batch per replica; a pipeline feeds num_replicas / num_pipelines replicas.
        skip = skip_steps * input_context.num_replicas_in_sync // input_context.num_input_pipelines
        return make_train_dataset(
            info, global_batch_size, mix_ratio, input_context=input_context, skip_batches=skip, **kwargs
        )

    return strategy.distribute_datasets_from_function(dataset_fn)
