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

import hashlib
import json
import os
from typing import Any, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.data import pipeline, schema
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.output_dir import atomic_output_dir
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
) -> schema.DatasetInfo:
    """Writes the pooled features of `backbone` for every record of `splits`.

    Args:
        backbone: `keras.Model`. Images to features, run in inference mode.
        info: `DatasetInfo`. The dataset of images.
        output_dir: str. The cache folder (appears only when complete).
        backbone_name: str. Backbone architecture (selects preprocessing).
        backbone_source: str. The checkpoint prefix or weights the backbone
            was loaded from; a cache is reused only for the same source.
        image_size: int. Input side (0: the backbone's default).
        splits: list of str. Splits to cache. Defaults to all.
        batch_size: int. Images per backbone call. Defaults to 64.
        num_shards: int. Shards per split. Defaults to 4.
        overwrite: bool. Replace an existing cache. Defaults to False.
        progress: bool. Show a progress bar. Defaults to True.
        dtype: str. "float32", or "float16" (half the size on disk; a
            feature beyond float16's range is an error). Defaults to
            "float32".

    Returns:
        The cache's `DatasetInfo`.

    Raises:
        FeatureCacheError: with float16, a feature overflows float16 (no
            cache is left behind).
    """
    if dtype not in schema.FEATURE_DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(schema.FEATURE_DTYPES)}")
    splits = list(splits or sorted(info.splits))
    for split in splits:
        info.split_files(split)  # a clear error for a split the dataset lacks

    @tf.function(reduce_retracing=True)
    def features_of(images):
        return backbone(images, training=False)

    feature_dim = int(backbone.output.shape[-1])
    input_config = InputConfig(backbone=backbone_name, image_size=image_size or None)
    split_infos = {}
    with atomic_output_dir(output_dir, overwrite) as tmp:
        for split in splits:
            ds = pipeline.make_split_dataset(
                info,
                split,
                batch_size,
                input_config=input_config,
                training=False,
                with_ids=True,
                with_true=True,
            )
            total = info.splits[split].num_records
            shards = max(1, min(num_shards, total))
            names = [schema.shard_name(split, j, shards) for j in range(shards)]
            writers = [tf.io.TFRecordWriter(os.path.join(tmp, n)) for n in names]
            count = 0
            bar = progress_bar(total, f"features {split}", progress)
            for batch in ds:
                feats = features_of(batch["image"]).numpy()
                arrays = {k: v.numpy() for k, v in batch.items() if k != "image"}
                if dtype == "float16":
                    feats = _as_float16(feats, arrays["id"], split, count)
                for i in range(len(feats)):
                    noisy, pos, neg, true = _index_lists(arrays, i)
                    example = make_example(
                        arrays["id"][i].decode("utf-8"),
                        None,
                        noisy,
                        pos,
                        neg,
                        true,
                        features=feats[i],
                        feature_dtype=dtype,
                    )
                    writers[count % shards].write(example)
                    count += 1
                bar.update(len(feats))
            bar.close()
            for w in writers:
                w.close()
            split_infos[split] = schema.SplitInfo(num_records=count, num_shards=shards, files=names)
        cache = schema.DatasetInfo(
            num_classes=info.num_classes,
            multi_label=info.multi_label,
            splits=split_infos,
            classes=info.classes,
            provenance={
                "source": "feature_cache",
                "feature_cache": {
                    "feature_dim": feature_dim,
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
        cache.write(tmp)
    return schema.load_dataset_info(output_dir)


def weights_source(source: str) -> str:
    """The one form a backbone's weights source is kept and compared in: "none", "imagenet", or a real path."""
    if source in ("", "none", "imagenet"):
        return source or "none"
    return os.path.realpath(source)


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
    path = _estimate_path(info, name, key)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(tmp, "w") as f:
            json.dump(value, f)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except (OSError, tf.errors.OpError):
        return False
    return True
