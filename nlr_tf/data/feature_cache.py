"""The feature cache: a frozen backbone's pooled features, computed once.

With the backbone frozen (the papers' multi-label scheme: train `noisy`,
then only the heads), every training step would recompute the same
features. The cache stores them instead: a dataset folder in the usual
schema whose records hold `features` (float list) in place of
`image/encoded`, with the same ids and label lists, and whose
`dataset.json` says where the features came from (`provenance.
feature_cache`: source dataset, backbone, the checkpoint or weights it was
loaded from, feature size, and the dtype they are stored in). The input
pipeline reads it like any dataset (exact mixing included) and the models
skip their backbone when a batch carries `features`.

Under a `tf.distribute` strategy every replica runs the backbone on its
own batches; with several workers, each writes its own shards into the
chief's temporary folder and the chief lists them all in `dataset.json`
once every worker is done (`extract_features`). A cache made either way
holds the same records.

A float16 cache (`dtype="float16"`) stores each record's features as
little-endian float16 bytes (`features/float16`): about half the size on
disk, values rounded to float16's 11 significant bits; the pipeline decodes
them to float32, so every reader sees the same float32 `features`. A
feature beyond float16's range is refused, not stored as inf.

Estimates computed from a cache's features alone (confident learning's
label issues: the same for every learning rate and clean fraction that
trains on the same cache and seed) are kept beside it in `estimates/`,
each under a key of everything it depends on (`estimate_key`), so later
runs read them instead of computing them again.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.data import files, pipeline, schema
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.output_dir import OutputDirError, atomic_output_dir
from nlr_tf.data.parsing import make_example
from nlr_tf.data.progress import progress_bar


class FeatureCacheError(ValueError):
    """A cache that does not belong to the run that wants to use it, or cannot hold the features."""


def _index_lists(batch: dict[str, np.ndarray], i: int):
    mask = batch["verified_mask"][i] > 0
    verified = batch["verified_labels"][i] > 0
    true = np.flatnonzero(batch["true_labels"][i]).tolist() if batch["has_true"][i] else None
    return (
        np.flatnonzero(batch["noisy_labels"][i]).tolist(),
        np.flatnonzero(mask & verified).tolist(),
        np.flatnonzero(mask & ~verified).tolist(),
        true,
    )


def _as_float16(feats: np.ndarray, ids: np.ndarray, split: str, first: int) -> np.ndarray:
    """`feats` [n, F] as little-endian float16; refuses a finite feature that float16 cannot hold."""
    with np.errstate(over="ignore"):  # checked below, with the record named
        half = feats.astype("<f2")
    overflow = ~np.isfinite(half) & np.isfinite(feats)
    if overflow.any():
        i, j = np.argwhere(overflow)[0]
        raise FeatureCacheError(
            f"split {split!r}, record {first + i} (id {ids[i].decode('utf-8')!r}): feature {j} = {feats[i, j]:g} "
            f"overflows float16 (largest finite value {float(np.finfo(np.float16).max):g}); "
            f"{int(overflow.any(axis=1).sum())} record(s) of this batch do: keep this cache in float32"
        )
    return half


def extract_features(
    backbone: keras.Model,
    info: schema.DatasetInfo,
    output_dir: str,
    *,
    backbone_name: str,
    backbone_source: str,
    image_size: int = 0,
    splits: Optional[Sequence[str]] = None,
    batch_size: int = 64,
    num_shards: int = 4,
    overwrite: bool = False,
    progress: bool = True,
    dtype: str = "float32",
    strategy: Optional[tf.distribute.Strategy] = None,
) -> schema.DatasetInfo:
    """Writes the pooled features of `backbone` for every record of `splits`.

    Under a `tf.distribute` strategy every replica runs the backbone on its
    own batches. Each worker (process) reads its share of the split through
    `strategy.distribute_datasets_from_function` and writes its own shards,
    numbered so that no two workers' names collide, into one temporary
    folder that the chief (worker 0) created and named to the others.
    Every record is written once, by the worker that read it. Once every
    worker has closed its shards (an all-reduce of their record counts: a
    barrier), the chief writes `dataset.json` listing every shard and the
    exact counts, and moves the folder into place; every worker returns
    when the cache is complete. Several workers need `output_dir` on a
    filesystem they all see (`gs://`, a shared disk).

    Args:
        backbone: `keras.Model`. Images to features, run in inference mode
            (under `strategy`, built in its scope).
        info: `DatasetInfo`. The dataset of images.
        output_dir: str. The cache folder (appears only when complete).
        backbone_name: str. Backbone architecture (selects preprocessing).
        backbone_source: str. The checkpoint prefix or weights the backbone
            was loaded from; a cache is reused only for the same source.
        image_size: int. Input side (0: the backbone's default).
        splits: list of str. Splits to cache. Defaults to all.
        batch_size: int. Images per backbone call, summed over replicas (a
            multiple of their number). Defaults to 64.
        num_shards: int. Shards per split (with several workers, rounded
            up to a multiple of their number). Defaults to 4.
        overwrite: bool. Replace an existing cache. Defaults to False.
        progress: bool. Show a progress bar. Defaults to True.
        dtype: str. "float32", or "float16" (half the size on disk; a
            feature beyond float16's range is an error). Defaults to
            "float32".
        strategy: `tf.distribute.Strategy` or None. Where the backbone
            runs. Defaults to the current one (one device outside any
            scope).

    Returns:
        The cache's `DatasetInfo`.

    Raises:
        FeatureCacheError: with float16, a feature overflows float16 (no
            cache is left behind).
        ValueError: a batch size that does not split over the replicas.
    """
    if dtype not in schema.FEATURE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(schema.FEATURE_DTYPES)}")
    strategy = strategy or tf.distribute.get_strategy()
    if batch_size % strategy.num_replicas_in_sync:
        raise ValueError(f"batch_size={batch_size} does not split over {strategy.num_replicas_in_sync} replicas")
    splits = list(splits or sorted(info.splits))
    for split in splits:
        info.split_files(split)  # a clear error for a split the dataset lacks
    workers = _Workers(strategy)

    def replica_features(images):
        # A replica whose input ran out before the others' gets an empty batch, which the backbone cannot take:
        # it runs on one blank image instead, and none of its features are kept.
        blank = tf.zeros(tf.concat([[1], tf.shape(images)[1:]], 0), images.dtype)
        return tf.cond(
            tf.shape(images)[0] > 0,
            lambda: backbone(images, training=False),
            lambda: backbone(blank, training=False)[:0],
        )

    @tf.function(reduce_retracing=True)
    def features_of(images):
        return strategy.run(replica_features, args=(images,))

    input_config = InputConfig(backbone=backbone_name, image_size=image_size or None)
    # Shards per worker: as many as asked for (no empty ones) for one worker; each worker's share of them for several.
    if workers.count == 1:
        per_worker = {s: max(1, min(num_shards, info.splits[s].num_records)) for s in splits}
    else:
        per_worker = {s: -(-num_shards // workers.count) for s in splits}
    with _shared_output_dir(output_dir, overwrite, workers) as out:
        counts, error = {}, ""
        for split in splits:

            def dataset_fn(input_context, split=split):
                return pipeline.make_split_dataset(
                    info,
                    split,
                    batch_size,
                    input_config=input_config,
                    training=False,
                    input_context=input_context,
                    with_ids=True,
                    with_true=True,
                )

            # On a TPU the string ids stay on the host; the images go to the cores inside the step.
            options = tf.distribute.InputOptions(experimental_fetch_to_device=not _is_tpu(strategy))
            ds = strategy.distribute_datasets_from_function(dataset_fn, options)
            k = per_worker[split]
            paths = [os.path.join(out.path, _shard_name(split, workers.index, j, k, workers.count)) for j in range(k)]
            total = info.splits[split].num_records if workers.count == 1 else None
            counts[split], error = _write_split(ds, features_of, workers, split, paths, dtype, error, total, progress)
        # === Barrier: every worker has closed its shards; each learns every worker's counts ===
        report = json.dumps({"counts": counts, "error": error[:1000]}, ensure_ascii=False)
        reports = [json.loads(r) for r in workers.gather(report)]
        failed = [(w, r["error"]) for w, r in enumerate(reports) if r["error"]]
        if failed:
            w, message = failed[0]
            raise FeatureCacheError(message if workers.count == 1 else f"worker {w}: {message}")
        out.manifest = schema.DatasetInfo(
            num_classes=info.num_classes,
            multi_label=info.multi_label,
            splits={s: _split_info(s, [r["counts"][s] for r in reports], per_worker[s]) for s in splits},
            classes=info.classes,
            provenance={
                "source": "feature_cache",
                "feature_cache": {
                    "feature_dim": int(backbone.output.shape[-1]),
                    "source_dataset": weights_source(info.path),
                    "backbone": backbone_name,
                    "backbone_source": weights_source(backbone_source),
                    "image_size": image_size,
                    "dtype": dtype,
                },
                "noise_statistics": info.provenance.get("noise_statistics", {}),
            },
            skipped=info.skipped,
        )
    return schema.load_dataset_info(output_dir)


def _shard_name(split: str, worker: int, index: int, per_worker: int, num_workers: int) -> str:
    """Shard `index` of worker `worker`'s `per_worker`: numbered after the shards of the workers before it."""
    return schema.shard_name(split, worker * per_worker + index, num_workers * per_worker)


def _split_info(split: str, counts: list[int], per_worker: int) -> schema.SplitInfo:
    """The split's entry in `dataset.json` from each worker's record count: the shards each worker opened (shard j
    of a worker holds records j, j + per_worker, ...) and the exact total."""
    names = [
        _shard_name(split, w, j, per_worker, len(counts))
        for w, n in enumerate(counts)
        for j in range(min(per_worker, n))
    ]
    return schema.SplitInfo(num_records=sum(counts), num_shards=len(names), files=names)


def _is_tpu(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def _write_split(
    ds: tf.distribute.DistributedDataset,
    features_of,
    workers: "_Workers",
    split: str,
    paths: list[str],
    dtype: str,
    error: str,
    total: Optional[int],
    progress: bool,
) -> tuple[int, str]:
    """Writes this worker's records of `split` round-robin into `paths`; returns (records written, error).

    With several workers a worker that fails (a feature beyond float16's
    range, a write that fails) stops writing but goes on reading: every
    step of their input is a collective that all take together, and the
    error is told to all at the barrier. `error` from an earlier split
    stops it from the start. With one worker the error is raised at once.
    """
    strategy = workers.strategy
    writers: dict[int, tf.io.TFRecordWriter] = {}
    count = 0
    bar = progress_bar(total, f"features {split}", progress)
    for batch in ds:
        if error:
            continue
        try:
            feats = strategy.experimental_local_results(features_of(batch["image"]))
            local = {k: strategy.experimental_local_results(v) for k, v in batch.items() if k != "image"}
            # One batch per local replica (empty where a replica had no records left), in the order they were read.
            for r, replica_feats in enumerate(feats):
                arrays = {k: v[r].numpy() for k, v in local.items()}
                replica_feats = replica_feats.numpy()
                if dtype == "float16":
                    replica_feats = _as_float16(replica_feats, arrays["id"], split, count)
                for i in range(len(replica_feats)):
                    noisy, pos, neg, true = _index_lists(arrays, i)
                    example = make_example(
                        arrays["id"][i].decode("utf-8"),
                        None,
                        noisy,
                        pos,
                        neg,
                        true,
                        features=replica_feats[i],
                        feature_dtype=dtype,
                    )
                    shard = count % len(paths)
                    if shard not in writers:  # opened at its first record: no empty shards
                        writers[shard] = tf.io.TFRecordWriter(paths[shard])
                    writers[shard].write(example)
                    count += 1
                bar.update(len(replica_feats))
        except Exception as e:
            if workers.count == 1:
                raise
            error = str(e) if isinstance(e, FeatureCacheError) else f"{type(e).__name__}: {e}"
    bar.close()
    for w in writers.values():
        w.close()
    return count, error


# === Several workers: who they are, what they tell each other, the folder they share ===

# Bytes of text each worker can send through one exchange.
_MESSAGE_BYTES = 16384


class _Workers:
    """This process's place among the workers (processes) of a strategy, and the text they exchange.

    Worker 0 is the chief (`nlr_tf.training.strategies.is_chief`: the
    `chief` task, else worker 0); one process drives every replica of a
    one-worker strategy (one device, MirroredStrategy, a TPU).
    """

    def __init__(self, strategy: tf.distribute.Strategy):
        self.strategy = strategy
        ids = strategy.experimental_distribute_values_from_function(lambda ctx: ctx.replica_id_in_sync_group)
        replica_ids = strategy.experimental_local_results(ids)  # of this worker's replicas
        self.local_replicas = len(replica_ids)
        self.count = strategy.num_replicas_in_sync // self.local_replicas
        self.index = int(replica_ids[0]) // self.local_replicas

    def gather(self, text: str) -> list[str]:
        """Every worker's `text`, on every worker: one all-reduce through the strategy, which every worker must
        reach (a barrier)."""
        if self.count == 1:
            return [text]
        data = np.frombuffer(text.encode("utf-8"), np.uint8)
        if len(data) > _MESSAGE_BYTES:
            raise ValueError(f"{len(data)} bytes to send to the other workers; at most {_MESSAGE_BYTES} fit")
        rows = np.zeros((self.count, _MESSAGE_BYTES), np.int32)
        rows[self.index, : len(data)] = data

        def value_fn(ctx):  # the worker's first replica sends its row; the sum over workers is every row
            first = ctx.replica_id_in_sync_group % self.local_replicas == 0
            return tf.constant(rows if first else np.zeros_like(rows))

        values = self.strategy.experimental_distribute_values_from_function(value_fn)
        rows = self.strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None).numpy()
        return [bytes(row.astype(np.uint8)).rstrip(b"\0").decode("utf-8") for row in rows]


@dataclasses.dataclass
class _Output:
    """The temporary folder every worker writes its shards into, and the cache's `DatasetInfo` the chief writes
    there once every worker is done."""

    path: str
    manifest: Optional[schema.DatasetInfo] = None


@contextlib.contextmanager
def _shared_output_dir(output_dir: str, overwrite: bool, workers: _Workers) -> Iterator[_Output]:
    """`atomic_output_dir` for every worker: the chief makes the temporary folder and tells the others its name;
    all write into it; once the body is done on every worker, the chief writes the manifest and moves the folder
    into place, and every worker leaves when it is there (or raises when it is not)."""
    if workers.count == 1:
        with atomic_output_dir(output_dir, overwrite) as tmp:
            out = _Output(tmp)
            yield out
            out.manifest.write(tmp)
        return
    chief = workers.index == 0
    stack, tmp, failure = contextlib.ExitStack(), "", None
    if chief:
        try:
            tmp = stack.enter_context(atomic_output_dir(output_dir, overwrite))
        except Exception as e:  # told to the others, then raised
            failure = e
    told = json.loads(workers.gather(json.dumps({"tmp": tmp, "error": str(failure or "")[:1000]}) if chief else "")[0])
    if failure is not None:
        raise failure
    if told["error"]:
        raise OutputDirError(f"the chief cannot write {output_dir!r}: {told['error']}")
    body_done, commit_error = False, None
    try:
        with stack:
            # Every worker must see the chief's folder (the output on a filesystem they share).
            unseen = workers.gather("" if tf.io.gfile.isdir(told["tmp"]) else "unseen")
            if any(unseen):
                raise OutputDirError(
                    f"worker(s) {', '.join(str(w) for w, u in enumerate(unseen) if u)} cannot see the chief's "
                    f"temporary folder {told['tmp']!r}: several workers need --output_dir on a filesystem they "
                    "all reach (gs://, a shared disk)"
                )
            out = _Output(told["tmp"])
            yield out
            # Past here only the chief works: its failure is told to the others below.
            body_done = True
            if chief:
                out.manifest.write(out.path)
    except Exception as e:  # a failure in the body is every worker's alike (told at its barrier): raised by all
        if not body_done:
            raise
        commit_error = e
    status = workers.gather(str(commit_error or "")[:1000] if chief else "")[0]
    if commit_error is not None:
        raise commit_error
    if status:
        raise OutputDirError(f"the chief could not complete {output_dir!r}: {status}")


def weights_source(source: str) -> str:
    """The one form a backbone's weights source is kept and compared in: "none", "imagenet", or a real path."""
    if source in ("", "none", "imagenet"):
        return source or "none"
    return files.absolute(source) if files.is_url(source) else os.path.realpath(source)


def cache_mismatch(
    cache: schema.DatasetInfo,
    *,
    source_dataset: str,
    backbone_source: str,
    image_size: Optional[int] = None,
    dtype: Optional[str] = None,
) -> str:
    """Why `cache` does not hold the features of this dataset, backbone and input size, stored as `dtype` ("" when
    it does; `image_size` or `dtype` None: not checked)."""
    meta: dict[str, Any] = cache.provenance.get("feature_cache", {})
    if not meta:
        return f"{cache.path!r} is a dataset of images, not a feature cache"
    if weights_source(meta.get("source_dataset", "")) != weights_source(source_dataset):
        made_from = meta.get("source_dataset")
        return f"feature cache {cache.path!r} was made from dataset {made_from!r}, not {source_dataset!r}"
    if weights_source(meta.get("backbone_source", "")) != weights_source(backbone_source):
        made_by = meta.get("backbone_source")
        return f"feature cache {cache.path!r} holds features of {made_by!r}, not of {backbone_source!r}"
    if image_size is not None and int(meta.get("image_size", 0)) != int(image_size):
        return f"feature cache {cache.path!r} holds features of {meta.get('image_size')}-pixel images, not {image_size}"
    if dtype is not None and cache.feature_dtype != dtype:
        return f"feature cache {cache.path!r} stores its features as {cache.feature_dtype}, not {dtype}"
    return ""


def load_feature_cache(
    path: str,
    *,
    source_dataset: str,
    backbone_source: str,
    image_size: Optional[int] = None,
    splits: Sequence[str] = (),
    dtype: Optional[str] = None,
) -> schema.DatasetInfo:
    """Opens a cache and checks it was made from this dataset, backbone and input size, stored as `dtype` (None:
    any), with `cache_mismatch`.

    Raises:
        FeatureCacheError: the cache is of another dataset, backbone,
            input size or dtype, or lacks a needed split.
    """
    cache = schema.load_dataset_info(path)
    why = cache_mismatch(
        cache, source_dataset=source_dataset, backbone_source=backbone_source, image_size=image_size, dtype=dtype
    )
    if why:
        raise FeatureCacheError(why)
    missing = [s for s in splits if not cache.has_split(s)]
    if missing:
        raise FeatureCacheError(f"feature cache {path!r} lacks the split(s) {', '.join(missing)}")
    return cache


def read_split(info: schema.DatasetInfo, split: str, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """One split of a feature cache as numpy arrays, in the split's order.

    Returns:
        dict: `features` float32 [N, F] (whatever dtype the cache stores), `noisy_labels`, `verified_labels`,
        `verified_mask` float32 [N, d] (multi-hot), `id` bytes [N].

    Raises:
        ValueError: `info` is a dataset of images, not a feature cache.
    """
    if not info.feature_dim:
        raise ValueError(f"{info.path!r} is a dataset of images, not a feature cache")
    backbone = info.provenance["feature_cache"].get("backbone", "small_cnn")
    ds = pipeline.make_split_dataset(
        info, split, batch_size, input_config=InputConfig(backbone=backbone), training=False, with_ids=True
    )
    keys = ("features", "noisy_labels", "verified_labels", "verified_mask", "id")
    parts: dict[str, list] = {k: [] for k in keys}
    for batch in ds:
        for k in keys:
            parts[k].append(batch[k].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


ESTIMATES_DIR = "estimates"


def estimate_key(*parts: Any) -> str:
    """A hex key of `parts` (numpy arrays by dtype, shape and bytes, arrays of bytes objects by their
    contents; anything else by its repr)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray) and part.dtype == object:
            h.update(b"\0".join(bytes(v) for v in part.ravel()))
        elif isinstance(part, np.ndarray):
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _estimate_path(info: schema.DatasetInfo, name: str, key: str) -> str:
    return os.path.join(info.path, ESTIMATES_DIR, f"{name}-{key}.json")


def read_estimate(info: schema.DatasetInfo, name: str, key: str) -> Optional[Any]:
    """The estimate `name` kept beside the cache under `key`, or None if there is none."""
    path = _estimate_path(info, name, key)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_estimate(info: schema.DatasetInfo, name: str, key: str, value: Any) -> bool:
    """Keeps `value` beside the cache under `key`, atomically (a reader sees the whole file or none).

    Returns False, and keeps nothing, where the cache's folder cannot be
    written (a read-only or shared copy): the estimate is only a saving.
    """
    try:
        files.write_json(_estimate_path(info, name, key), value, indent=None)
    except files.file_errors():
        return False
    return True
