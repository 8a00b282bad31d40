"""Running a model over every record of a split: scores, labels and the model's extra outputs (c-hat).

One loop over the batches hands each batch to a collector: `DenseCollector`
keeps every [N, d] array (label cleaning reads noisy labels and c-hat per
image); `EntriesCollector` keeps only what evaluation reads, the verified
entries and a few numbers per image, in O(verified entries + N) memory
(Open Images: thousands of classes, a few verified per image).

Used by training-time evaluation, `nlr-eval`, `nlr-clean-labels` and the
reproduction; it needs the model and the input pipeline only.
"""

import dataclasses
import weakref
from typing import Optional

import numpy as np
import tensorflow as tf

from nlr_tf.data import pipeline
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.progress import progress_bar
from nlr_tf.data.schema import DatasetInfo
from nlr_tf.metrics import VerifiedEntries

LABEL_KEYS = ("id", "noisy_labels", "verified_labels", "verified_mask", "true_labels", "has_true")
TOP_K = 5  # top classes kept per image for the examples grid

_FORWARD_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _forward_function(model, jit_compile: bool = False):
    """The model's traced inference step (XLA-compiled if asked), built once per model and mode."""
    functions = _FORWARD_FUNCTIONS.setdefault(model, {})
    if jit_compile not in functions:

        @tf.function(reduce_retracing=True, jit_compile=jit_compile)
        def forward(batch):
            features = model.features(batch, training=False)
            out = {"scores": model.heads(features, training=False)["scores"]}
            return out | model.extra_output_values(batch, features)

        functions[jit_compile] = forward
    return functions[jit_compile]


def split_dataset(info: DatasetInfo, split: str, *, backbone: str, image_size: int = 0, batch_size: int = 64):
    """The batches `predict` reads: every record of `split` once, in order, with ids and known truth."""
    return pipeline.make_split_dataset(
        info,
        split,
        batch_size,
        input_config=InputConfig(backbone=backbone, image_size=image_size or None),
        training=False,
        with_ids=True,
        with_true=True,
    )


class DenseCollector:
    """Keeps every array of every batch: `result()` is a dict of [N, ...] numpy arrays."""

    def __init__(self):
        self.parts: dict[str, list] = {}

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for key, value in batch.items():
            self.parts.setdefault(key, []).append(value)

    def result(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.parts.items() if v}


@dataclasses.dataclass(eq=False)
class Evaluated:
    """What evaluation reads of a split's predictions, in O(verified entries + N) memory.

    Args:
        entries: `VerifiedEntries`. The scores against the verified labels.
        ids: bytes [N]. The image ids, in the split's order.
        has_true: bool [N]. Whether an image's truth is known.
        truth: `VerifiedEntries` or None. The scores against the truth
            (every entry counted), when every image has it (the built-in
            benchmark); else None.
        top_class, top_score: int32 / float32 [N, k]. Each image's k
            highest-scoring classes (ties: the lower class first) and their
            scores.
        top_right: int8 [N, k]. Whether each is right: 1 / 0 against the
            truth where the image has it, else against its verified labels;
            -1 for an unverified class.
        true_rows, true_classes: int32 [P]. The (image, class) pairs that the
            truth says present, of the images with truth.
    """

    entries: VerifiedEntries
    ids: np.ndarray
    has_true: np.ndarray
    truth: Optional[VerifiedEntries]
    top_class: np.ndarray
    top_score: np.ndarray
    top_right: np.ndarray
    true_rows: np.ndarray
    true_classes: np.ndarray

    @property
    def num_rows(self) -> int:
        return self.entries.num_rows

    def take(self, index) -> "Evaluated":
        """The predictions of images `index`, as images 0 ... len(index) - 1."""
        index = np.asarray(index, np.intp)
        # The truth's pairs of the drawn images (repeats allowed), in the order drawn.
        starts = np.searchsorted(self.true_rows, np.arange(self.num_rows + 1))
        counts = np.diff(starts)[index]
        pairs = np.repeat(starts[index] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum(), dtype=np.intp)
        return Evaluated(
            entries=self.entries.take(index),
            ids=self.ids[index],
            has_true=self.has_true[index],
            truth=None if self.truth is None else self.truth.take(index),
            top_class=self.top_class[index],
            top_score=self.top_score[index],
            top_right=self.top_right[index],
            true_rows=np.repeat(np.arange(index.size, dtype=np.int32), counts),
            true_classes=self.true_classes[pairs],
        )

    @classmethod
    def from_dense(cls, p: dict[str, np.ndarray], top_k: int = TOP_K) -> "Evaluated":
        """The `Evaluated` of `predict`'s dense arrays (`scores` and `LABEL_KEYS`)."""
        collector = EntriesCollector(top_k)
        collector.add(p)
        return collector.result()


def _top_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """int [n, k]: `np.argsort(-scores, kind="stable")[:, :k]`, from the entries at or above each row's k-th score."""
    n, d = scores.shape
    if k == 0:
        return np.zeros((n, 0), np.intp)
    if k >= d:
        return np.argsort(-scores, axis=1, kind="stable")
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1 : k]
    rows, cols = np.nonzero(scores >= kth)  # row by row, classes ascending: ties keep the lower class first
    order = np.lexsort((-scores[rows, cols], rows))  # stable: by row, then by descending score
    first = np.searchsorted(rows, np.arange(n))  # each row's first candidate (rows are sorted)
    return cols[order][first[:, None] + np.arange(k)]


class EntriesCollector:
    """Keeps, batch by batch, only what evaluation reads: `result()` is an `Evaluated`.

    Args:
        top_k: int. Top classes kept per image (the examples grid). 0: none.
            Defaults to 5.
        truth: bool. Also the entries against the truth, when every image
            has it. Defaults to True.
    """

    def __init__(self, top_k: int = TOP_K, truth: bool = True):
        self.top_k, self.truth = top_k, truth
        self.parts: dict[str, list] = {}
        self.rows = 0

    def _keep(self, key: str, value) -> None:
        self.parts.setdefault(key, []).append(value)

    def add(self, batch: dict[str, np.ndarray]) -> None:
        scores, has_true = batch["scores"], np.asarray(batch["has_true"], bool)
        verified, mask = batch["verified_labels"], batch["verified_mask"]
        self._keep("entries", VerifiedEntries.from_dense(scores, verified, mask))
        self._keep("ids", batch["id"])
        self._keep("has_true", has_true)
        # The truth's entries while every image so far has it (dropped at the first image without).
        if self.truth and has_true.all() and self.parts.get("truth", []) is not None:
            self._keep("truth", VerifiedEntries.from_dense(scores, batch["true_labels"]))
        else:
            self.parts["truth"] = None
        rows, classes = np.nonzero((batch["true_labels"] > 0) & has_true[:, None])
        self._keep("true_rows", (rows + self.rows).astype(np.int32))
        self._keep("true_classes", classes.astype(np.int32))
        k = min(self.top_k, scores.shape[1])
        top = _top_classes(scores, k)
        every = np.arange(len(scores))[:, None]
        right = np.where(mask[every, top] > 0, verified[every, top] > 0, -1).astype(np.int8)
        right = np.where(has_true[:, None], batch["true_labels"][every, top] > 0, right).astype(np.int8)
        self._keep("top_class", top.astype(np.int32))
        self._keep("top_score", np.asarray(scores[every, top], np.float32))
        self._keep("top_right", right)
        self.rows += len(scores)

    def result(self) -> Evaluated:
        p = self.parts
        if not p:
            raise ValueError("no batch to evaluate: the split is empty")
        truth = None if p["truth"] is None else VerifiedEntries.concatenate(p["truth"])
        joined = {k: np.concatenate(p[k]) for k in p if k not in ("entries", "truth")}
        return Evaluated(entries=VerifiedEntries.concatenate(p["entries"]), truth=truth, **joined)


def predict(
    model,
    info: DatasetInfo,
    split: str,
    *,
    backbone: str,
    image_size: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    dataset=None,
    jit_compile: bool = False,
    collector=None,
):
    """Scores and labels of every record of `split`, in the split's order.

    Features come from the backbone on the images, or from `info` itself
    when it is a feature cache. `dataset`: the `split_dataset` of these
    arguments, when the caller keeps one (building it traces its parsing).

    Returns:
        What `collector` keeps of each batch: by default (`DenseCollector`)
        a dict of numpy arrays: `scores`, `noisy_labels`, `verified_labels`,
        `verified_mask`, `true_labels` [N, d], `has_true` [N], `id` [N]
        (bytes), and the model's `extra_outputs` (label cleaning: `cleaned`
        [N, d], c-hat). `EntriesCollector`: an `Evaluated`, what evaluation
        reads (see `predict_entries`).

    `jit_compile`: the model's step compiled with XLA (ids and other
    strings stay outside it).
    """
    ds = dataset or split_dataset(info, split, backbone=backbone, image_size=image_size, batch_size=batch_size)
    forward = _forward_function(model, jit_compile)
    collector = DenseCollector() if collector is None else collector
    bar = progress_bar(info.splits[split].num_records, f"predicting {split}", progress)
    for batch in ds:
        numeric = {k: v for k, v in batch.items() if v.dtype != tf.string}
        values = {key: value.numpy() for key, value in forward(numeric).items()}
        values.update({key: batch[key].numpy() for key in LABEL_KEYS})
        collector.add(values)
        bar.update(len(values["id"]))
    bar.close()
    return collector.result()


def predict_entries(model, info: DatasetInfo, split: str, *, top_k: int = TOP_K, truth: bool = True, **kwargs):
    """`predict` keeping only what evaluation reads (`EntriesCollector(top_k, truth)`): an `Evaluated`."""
    return predict(model, info, split, collector=EntriesCollector(top_k, truth), **kwargs)
