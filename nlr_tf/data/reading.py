"""The input pipeline's stages: a split's files -> serialized records -> example dicts.

`pipeline` chains them into datasets: `serialized_records` reads one split
(sharded, and for training shuffled and repeated), `examples` parses
blocks of records and decodes, resizes or augments the images. Every
random choice draws from a seed derived from the dataset's base seed
(`derive_seed`), so a deterministic pipeline is reproducible.
"""

import random
from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from nlr_tf.data import parsing, preprocessing, schema
from nlr_tf.data.input_config import InputConfig

AUTOTUNE = tf.data.AUTOTUNE

# Records parsed per vectorized parse call.
PARSE_BLOCK = 64


# === Seeds and options ===

# Salts of the stages that draw random numbers.
_FILE_SHUFFLE, _RECORD_SHUFFLE, _AUGMENT = 1, 2, 3


def resolve_seed(seed: Optional[int], deterministic: bool) -> int:
    """The base seed: the given one, 0 in deterministic mode, else random."""
    if seed is not None:
        return int(seed)
    if deterministic:
        return 0
    return random.SystemRandom().randrange(2**31 - 1)


def derive_seed(base: int, *salt: int) -> int:
    """A seed for one use (a split, a pipeline, a stage) of `base`."""
    return int(np.random.SeedSequence([base, *salt]).generate_state(1)[0] % (2**31 - 1))


def dataset_options(deterministic: bool, sharded: bool) -> tf.data.Options:
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


def is_sharded(input_context: Optional[tf.distribute.InputContext]) -> bool:
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
        ds = ds.shuffle(len(files), seed=derive_seed(seed, _FILE_SHUFFLE), reshuffle_each_iteration=True)
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

    def __init__(self, image_size: tuple[int, int], random_flip: bool, augment_seed: int):
        self.image_size = image_size
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


def serialized_records(
    info: schema.DatasetInfo,
    split: str,
    input_config: InputConfig,
    *,
    training: bool,
    input_context: Optional[tf.distribute.InputContext],
    seed: int,
) -> tf.data.Dataset:
    """Serialized records of one split: sharded, and for training shuffled
    and repeated. `seed` is this stream's, derived from the base seed."""
    deterministic = input_config.deterministic
    files = _split_files(info, split)
    # Each pipeline draws different random numbers from the same base seed.
    seed = derive_seed(seed, input_context.input_pipeline_id if input_context else 0)
    ds = _read_records(
        files,
        training=training,
        input_context=input_context,
        seed=seed,
        deterministic=deterministic,
        cycle_length=input_config.cycle_length,
    )
    if not training:
        return ds
    # Shuffle serialized records, before decoding: the buffer holds encoded
    # bytes and filling it decodes nothing. Shuffle *before* repeat so that
    # every record is seen exactly once per epoch, in a new order every
    # epoch.
    ds = ds.shuffle(input_config.shuffle_buffer, seed=derive_seed(seed, _RECORD_SHUFFLE), reshuffle_each_iteration=True)
    # Repeat before parsing and batching: batches run across epoch
    # boundaries (no partial batch per epoch) and the parallel maps never
    # drain at an epoch's end.
    return ds.repeat()


def examples(
    records: tf.data.Dataset,
    input_config: InputConfig,
    *,
    num_classes: int,
    block_size: int,
    is_clean: Union[bool, Sequence[bool]],
    with_ids: bool,
    with_true: bool,
    seed: int,
    ordered: bool,
    feature_dim: int = 0,
    feature_dtype: str = "float32",
    first_index: int = 0,
) -> tf.data.Dataset:
    """Serialized records -> unbatched example dicts, in the same order.

    `seed` is the dataset's, derived from the base seed. Records of a
    feature cache (`feature_dim` > 0) carry `features` (stored as
    `feature_dtype`, parsed to float32) and skip the image stages.
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
    decoder = _ImageDecoder(input_config.image_hw, input_config.random_flip, augment_seed=derive_seed(seed, _AUGMENT))
    if input_config.augment:
        # Number the examples (after repeat: new numbers every epoch) to
        # seed their augmentation statelessly.
        return ds.enumerate(start=first_index).map(
            decoder.decode_augmented, num_parallel_calls=AUTOTUNE, deterministic=ordered
        )
    return ds.map(decoder.decode, num_parallel_calls=AUTOTUNE, deterministic=ordered)
