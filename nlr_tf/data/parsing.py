"""Serializing and parsing `tf.train.Example`s of the dataset schema.

Labels arrive as index lists and leave as dense float vectors of length d:
`noisy_labels` (multi-hot), `verified_labels` (1 where verified present) and
`verified_mask` (1 where verified present *or* absent). Unverified entries
have mask 0: every loss and metric ignores them, none treats them as
negatives.
"""

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from nlr_tf.data import schema


def _int64_list(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def make_example(
    image_id: str,
    encoded: Optional[bytes],
    noisy: Sequence[int],
    verified_pos: Sequence[int] = (),
    verified_neg: Sequence[int] = (),
    true: Optional[Sequence[int]] = None,
    features: Optional[Sequence[float]] = None,
    feature_dtype: str = "float32",
) -> bytes:
    """A serialized `tf.train.Example` in the dataset schema.

    A feature cache record passes `features` (pooled backbone features)
    and `encoded=None`; with `feature_dtype="float16"` they are stored as
    little-endian float16 bytes under `features/float16` (the caller checks
    that they fit in float16's range).
    """
    feature = {
        schema.IMAGE_ID: _bytes(image_id.encode("utf-8")),
        schema.LABEL_NOISY: _int64_list(sorted(set(noisy))),
        schema.LABEL_VERIFIED_POS: _int64_list(sorted(set(verified_pos))),
        schema.LABEL_VERIFIED_NEG: _int64_list(sorted(set(verified_neg))),
    }
    if true is not None:
        feature[schema.LABEL_TRUE] = _int64_list(sorted(set(true)))
    if encoded is not None:
        feature[schema.IMAGE_ENCODED] = _bytes(encoded)
    if features is not None:
        if feature_dtype == "float16":
            feature[schema.FEATURES_FLOAT16] = _bytes(np.asarray(features, dtype="<f2").tobytes())
        elif feature_dtype == "float32":
            feature[schema.FEATURES] = tf.train.Feature(float_list=tf.train.FloatList(value=features))
        else:
            raise ValueError(f"feature_dtype={feature_dtype!r}: expected one of {', '.join(schema.FEATURE_DTYPES)}")
    # In key order: protobuf writes a map in an order that changes from process to process, and the same record
    # must give the same bytes in every process (a Beam worker, another run) for datasets to compare byte for byte.
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def iterate_label_lists(files: Sequence[str], batch_size: int = 1024) -> Iterator[dict[str, Any]]:
    """Yields each record's id and label index lists as Python values.

    For inspection and tests: decodes no image. Records without
    `label/true` get `true=None`.
    """
    spec = {
        schema.IMAGE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.LABEL_NOISY: tf.io.RaggedFeature(tf.int64),
        schema.LABEL_VERIFIED_POS: tf.io.RaggedFeature(tf.int64),
        schema.LABEL_VERIFIED_NEG: tf.io.RaggedFeature(tf.int64),
        schema.LABEL_TRUE: tf.io.RaggedFeature(tf.int64),
    }
    ds = tf.data.TFRecordDataset(list(files)).batch(batch_size).map(lambda s: tf.io.parse_example(s, spec))
    for batch in ds.as_numpy_iterator():
        keys = [schema.LABEL_NOISY, schema.LABEL_VERIFIED_POS, schema.LABEL_VERIFIED_NEG, schema.LABEL_TRUE]
        lists = {k: [np.asarray(v).tolist() for v in batch[k]] for k in keys}
        for i, image_id in enumerate(batch[schema.IMAGE_ID]):
            true = lists[schema.LABEL_TRUE][i]
            yield {
                "id": image_id.decode("utf-8"),
                "noisy": lists[schema.LABEL_NOISY][i],
                "verified_pos": lists[schema.LABEL_VERIFIED_POS][i],
                "verified_neg": lists[schema.LABEL_VERIFIED_NEG][i],
                "true": true if true else None,
            }


def label_arrays(files: Sequence[str], num_classes: int) -> dict[str, np.ndarray]:
    """Every record's labels as multi-hot arrays [N, d]: `noisy_labels`, `verified_labels`, `verified_mask`.

    Decodes no image (reads a feature cache's records as well as images').
    """
    rows = list(iterate_label_lists(files))
    keys = ("noisy_labels", "verified_labels", "verified_mask")
    out = {k: np.zeros((len(rows), num_classes), np.float32) for k in keys}
    for i, r in enumerate(rows):
        out["noisy_labels"][i, r["noisy"]] = 1.0
        out["verified_labels"][i, r["verified_pos"]] = 1.0
        out["verified_mask"][i, r["verified_pos"] + r["verified_neg"]] = 1.0
    return out


def _multi_hot_rows(indices: tf.RaggedTensor, num_classes: int) -> tf.Tensor:
    """Dense float32 [N, d]: row i has 1 at each of `indices[i]`."""
    rows = tf.cast(indices.value_rowids(), tf.int32)
    cols = tf.cast(indices.values, tf.int32)
    shape = tf.stack([tf.cast(indices.nrows(), tf.int32), num_classes])
    dense = tf.scatter_nd(tf.stack([rows, cols], axis=1), tf.ones_like(cols, tf.float32), shape)
    return tf.minimum(dense, 1.0)


def _decode_float16(raw: tf.Tensor, feature_dim: int) -> tf.Tensor:
    """float32 [N, F] from N strings of F little-endian float16 values; a clear error for another length."""
    lengths = tf.strings.length(raw)
    check = tf.debugging.assert_equal(
        lengths,
        2 * feature_dim,
        message=(
            f"a feature cache record's {schema.FEATURES_FLOAT16} does not hold {2 * feature_dim} bytes "
            f"({feature_dim} float16 values, the cache's feature_dim); the record lengths found"
        ),
        summarize=8,
    )
    with tf.control_dependencies([check]):
        values = tf.io.decode_raw(raw, tf.float16, little_endian=True)
    values = tf.reshape(values, [-1, feature_dim])
    return tf.cast(values, tf.float32)


def parse_examples(
    serialized: tf.Tensor,
    num_classes: int,
    with_ids: bool = True,
    with_true: bool = False,
    feature_dim: int = 0,
    feature_dtype: str = "float32",
) -> dict[str, tf.Tensor]:
    """Parses a 1-D batch of serialized examples at once (vectorized).

    Several times cheaper per record than parsing records one by one: the
    input pipeline parses blocks of records with it.

    Args:
        serialized: `tf.string` [N].
        num_classes: int. d.
        with_ids: bool. Also return `id` [N]. Defaults to True.
        with_true: bool. Also return `true_labels` and `has_true`.
            Defaults to False.
        feature_dim: int. For a feature cache: parse `features` [N, F]
            instead of the image bytes. Defaults to 0 (images).
        feature_dtype: str. The dtype the cache stores its features in
            (`DatasetInfo.feature_dtype`): "float32" (a float list) or
            "float16" (bytes, decoded). `features` is float32 either way.
            Defaults to "float32".

    Returns:
        dict with `image_bytes` [N] (or `features`), `noisy_labels`, `verified_labels`,
        `verified_mask` (float32 [N, d]), and `id`, `true_labels`,
        `has_true` when asked.
    """
    spec = {
        schema.LABEL_NOISY: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int32),
        schema.LABEL_VERIFIED_POS: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int32),
        schema.LABEL_VERIFIED_NEG: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int32),
    }
    if feature_dtype not in schema.FEATURE_DTYPES:
        raise ValueError(f"feature_dtype={feature_dtype!r}: expected one of {', '.join(schema.FEATURE_DTYPES)}")
    if feature_dim and feature_dtype == "float16":
        spec[schema.FEATURES_FLOAT16] = tf.io.FixedLenFeature([], tf.string)
    elif feature_dim:
        spec[schema.FEATURES] = tf.io.FixedLenFeature([feature_dim], tf.float32)
    else:
        spec[schema.IMAGE_ENCODED] = tf.io.FixedLenFeature([], tf.string)
    if with_ids:
        spec[schema.IMAGE_ID] = tf.io.FixedLenFeature([], tf.string, default_value="")
    if with_true:
        spec[schema.LABEL_TRUE] = tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int32)
    f = tf.io.parse_example(serialized, spec)
    pos = _multi_hot_rows(f[schema.LABEL_VERIFIED_POS], num_classes)
    neg = _multi_hot_rows(f[schema.LABEL_VERIFIED_NEG], num_classes)
    out = {
        "noisy_labels": _multi_hot_rows(f[schema.LABEL_NOISY], num_classes),
        "verified_labels": pos,
        "verified_mask": tf.minimum(pos + neg, 1.0),
    }
    if feature_dim and feature_dtype == "float16":
        out["features"] = _decode_float16(f[schema.FEATURES_FLOAT16], feature_dim)
    elif feature_dim:
        out["features"] = f[schema.FEATURES]
    else:
        out["image_bytes"] = f[schema.IMAGE_ENCODED]
    if with_ids:
        out["id"] = f[schema.IMAGE_ID]
    if with_true:
        true = f[schema.LABEL_TRUE]
        out["true_labels"] = _multi_hot_rows(true, num_classes)
        out["has_true"] = true.row_lengths() > 0
    return out
