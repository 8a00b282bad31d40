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

Both take an `InputConfig`: the options every dataset of a run shares
(backbone and image size, augmentation, seed, determinism, shuffle buffer,
parallelism). The stages they chain are in `reading`, the ratio arithmetic
in `mixing`.

Under a `tf.distribute` strategy build the training stream once per input
pipeline with `distribute_train_dataset` (through
`strategy.distribute_datasets_from_function`). Each input pipeline reads
its own shard of the files and batches
`ctx.get_per_replica_batch_size(global_batch_size)` examples per replica,
so the mixing ratio is exact on every replica. Do not pass a globally
batched mixed dataset to `strategy.experimental_distribute_dataset`: it
cuts each global batch into consecutive slices, and the first replica
would get only noisy examples.

Example:

```python
info = schema.load_dataset_info("/data/coco_noisy")
strategy = tf.distribute.MirroredStrategy()
input_config = InputConfig(backbone="inception_v3", seed=0)
train_ds = pipeline.distribute_train_dataset(
    strategy, info, global_batch_size=60, mix_ratio="9:1",
    input_config=input_config)
val_ds = pipeline.make_split_dataset(
    info, "val", 64, input_config=input_config, training=False)
```
"""

import functools
from typing import Any, Optional

import tensorflow as tf

from nlr_tf.data import reading, schema
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.mixing import MixRatio, check_mix_splits, mix_counts, parse_mix_ratio, per_replica_batch_size
from nlr_tf.data.reading import AUTOTUNE, PARSE_BLOCK, derive_seed


def make_split_dataset(
    info: schema.DatasetInfo,
    split: str,
    global_batch_size: int,
    *,
    input_config: InputConfig,
    training: bool,
    input_context: Optional[tf.distribute.InputContext] = None,
    with_ids: bool = False,
    with_true: bool = False,
    is_clean: Optional[bool] = None,
    drop_remainder: Optional[bool] = None,
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
        input_config: `InputConfig`. Backbone, image size, augmentation,
            seed and the other options shared with the training stream.
        training: bool. Shuffle and repeat forever (True) or read once in
            order (False).
        input_context: `tf.distribute.InputContext` or None. This pipeline's
            place among all input pipelines (from
            `distribute_datasets_from_function`).
        with_ids: bool. Include the string `id`. Defaults to False.
        with_true: bool. Include `true_labels` and `has_true` (evaluation
            reports only). Defaults to False.
        is_clean: bool or None. Value of `is_clean`. Defaults to True for
            every split except `"noisy"`.
        drop_remainder: bool or None. Drop a last partial batch. Defaults to
            `training` (static batch shapes for training; evaluation keeps
            every record).

    Returns:
        A `tf.data.Dataset` of element dicts (see the module docstring).

    Raises:
        DatasetError: the split is missing or empty.
        ValueError: a bad batch size.
    """
    batch_size = per_replica_batch_size(global_batch_size, input_context)
    seed = derive_seed(reading.resolve_seed(input_config.seed, input_config.deterministic), 0)
    records = reading.serialized_records(
        info, split, input_config, training=training, input_context=input_context, seed=seed
    )
    ds = reading.examples(
        records,
        input_config,
        num_classes=info.num_classes,
        block_size=PARSE_BLOCK,
        is_clean=(split != "noisy") if is_clean is None else bool(is_clean),
        with_ids=with_ids,
        with_true=with_true,
        seed=derive_seed(seed, input_context.input_pipeline_id if input_context else 0),
        ordered=input_config.deterministic or not training,
        feature_dim=info.feature_dim,
        feature_dtype=info.feature_dtype,
    )
    if not training and not reading.is_sharded(input_context):
        # Fails loudly if the shards hold other counts than dataset.json
        # says, and tells Keras the number of evaluation steps.
        ds = ds.apply(tf.data.experimental.assert_cardinality(info.splits[split].num_records))
    # Batch after the per-image map: decoding runs per image in parallel,
    # batching stacks the fixed-size results.
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    # Prefetch last, so that input work overlaps the consumer's step.
    ds = ds.prefetch(AUTOTUNE)
    options = reading.dataset_options(input_config.deterministic or not training, reading.is_sharded(input_context))
    return ds.with_options(options)


def make_train_dataset(
    info: schema.DatasetInfo,
    global_batch_size: int,
    mix_ratio: MixRatio = "9:1",
    *,
    input_config: InputConfig,
    noisy_split: str = "noisy",
    clean_split: str = "clean",
    input_context: Optional[tf.distribute.InputContext] = None,
    with_ids: bool = False,
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
    -> batch -> prefetch. A ratio with a zero part reads only the other
    split (`"1:0"`: the noisy baseline; `"0:1"`: training or fine-tuning on
    the clean split), and the unused split need not exist.

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
        input_config: `InputConfig`. Backbone, image size, augmentation,
            seed and the other options shared with `make_split_dataset`.
        noisy_split: str. Split of the noisy part. Defaults to `"noisy"`.
        clean_split: str. Split of the clean part, e.g. `"clean_all"` for
            the clean upper bound. Defaults to `"clean"`.
        input_context: `tf.distribute.InputContext` or None. See
            `distribute_train_dataset`.
        with_ids: bool. Include the string `id`. Defaults to False.
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
    parse_mix_ratio(mix_ratio)  # a bad ratio is named before a bad batch size
    batch_size = per_replica_batch_size(global_batch_size, input_context)
    num_noisy, num_clean = mix_counts(batch_size, mix_ratio)
    check_mix_splits(info, mix_ratio, noisy_split, clean_split)
    seed = reading.resolve_seed(input_config.seed, input_config.deterministic)
    records = functools.partial(
        reading.serialized_records, info, input_config=input_config, training=True, input_context=input_context
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
        noisy = records(noisy_split, seed=derive_seed(seed, 0))
        clean = records(clean_split, seed=derive_seed(seed, 1))
        choice = tf.data.Dataset.from_tensor_slices(tf.constant([0] * num_noisy + [1] * num_clean, tf.int64))
        ds = tf.data.Dataset.choose_from_datasets([noisy, clean], choice.repeat(), stop_on_empty_dataset=True)
        is_clean = [False] * num_noisy + [True] * num_clean
        block_size = batch_size
    elif num_noisy:
        ds, is_clean, block_size = records(noisy_split, seed=derive_seed(seed, 0)), False, PARSE_BLOCK
    else:
        ds, is_clean, block_size = records(clean_split, seed=derive_seed(seed, 1)), True, PARSE_BLOCK
    # One record per example, and batches are whole blocks: skipping records skips whole batches.
    ds = ds.skip(skip_batches * batch_size)
    ds = reading.examples(
        ds,
        input_config,
        num_classes=info.num_classes,
        block_size=block_size,
        is_clean=is_clean,
        with_ids=with_ids,
        with_true=False,
        seed=derive_seed(seed, 2, input_context.input_pipeline_id if input_context else 0),
        # The mixed blocks must stay in order through the image map.
        ordered=input_config.deterministic or not isinstance(is_clean, bool),
        feature_dim=info.feature_dim,
        feature_dtype=info.feature_dtype,
        first_index=skip_batches * batch_size,
    )
    # drop_remainder only makes the batch shape static: the stream is
    # infinite, nothing is dropped.
    ds = ds.batch(batch_size, drop_remainder=True)
    # Prefetch last, so that input work overlaps the training step.
    ds = ds.prefetch(AUTOTUNE)
    return ds.with_options(reading.dataset_options(input_config.deterministic, reading.is_sharded(input_context)))


def distribute_train_dataset(
    strategy: tf.distribute.Strategy,
    info: schema.DatasetInfo,
    global_batch_size: int,
    mix_ratio: MixRatio = "9:1",
    skip_steps: int = 0,
    *,
    input_config: InputConfig,
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
        input_config: `InputConfig`. See `make_train_dataset`.
        **kwargs: further keyword arguments of `make_train_dataset`
            (`noisy_split`, `clean_split`, `with_ids`).

    Returns:
        A `tf.distribute.DistributedDataset`.
    """

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Each step takes one batch per replica; a pipeline feeds num_replicas / num_pipelines replicas.
        skip = skip_steps * input_context.num_replicas_in_sync // input_context.num_input_pipelines
        return make_train_dataset(
            info,
            global_batch_size,
            mix_ratio,
            input_config=input_config,
            input_context=input_context,
            skip_batches=skip,
            **kwargs,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)
