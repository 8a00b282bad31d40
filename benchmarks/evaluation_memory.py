r"""Peak memory of evaluating predictions with very many classes.

Run:

    python benchmarks/evaluation_memory.py

Synthetic predictions of `--num_images` images x `--num_classes` classes
(Open Images V7 has 19,957), each image with about `--verified_per_image`
verified labels (half of them positive), arrive in batches of
`--batch_size` as `prediction.predict` receives them. The reference is the
dense path: every batch's scores and its noisy, verified, mask and true
label rows kept as float32 [B, d] arrays, concatenated into [N, d] arrays,
then `metrics.evaluate`. The entries path is `prediction.EntriesCollector`, what
`nlr-eval` keeps of each batch: its `metrics.VerifiedEntries` (the verified
entries, and each image's top class), ids, and each image's top-5 classes for
the examples grid; then `metrics.evaluate` of the entries concatenated. Both
give the same report (checked). Peak
memory is measured with `tracemalloc` (numpy reports its allocations to it),
from the first batch to the report.

Last line: `ratio: X.XX`, the dense path's peak memory over the entries
path's.
"""

import time
import tracemalloc

import numpy as np
from absl import app, flags

from nlr_tf import metrics
from nlr_tf.models.prediction import EntriesCollector

_NUM_IMAGES = flags.DEFINE_integer("num_images", 5_000, "Images.", lower_bound=1)
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 19_957, "Classes (Open Images V7: 19,957).", lower_bound=1)
_VERIFIED = flags.DEFINE_integer("verified_per_image", 10, "Verified labels per image.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per batch.", lower_bound=1)

_LABEL_KEYS = ("noisy_labels", "verified_labels", "verified_mask", "true_labels")


def batches(num_images: int, num_classes: int, verified: int, batch_size: int, seed: int = 0):
    """What `predict` receives per batch: float32 [B, d] scores, the pipeline's float32 [B, d] label rows, ids."""
    rng = np.random.default_rng(seed)
    for start in range(0, num_images, batch_size):
        b = min(batch_size, num_images - start)
        scores = rng.random((b, num_classes), dtype=np.float32)
        rows = np.repeat(np.arange(b), verified)
        classes = rng.integers(0, num_classes, rows.size)
        positive = rng.random(rows.size) < 0.5
        scores[rows[positive], classes[positive]] += 0.5  # positives score higher
        batch = {k: np.zeros(scores.shape, np.float32) for k in _LABEL_KEYS}
        batch["verified_mask"][rows, classes] = 1.0
        batch["verified_labels"][rows[positive], classes[positive]] = 1.0
        batch["noisy_labels"][rows[positive], classes[positive]] = 1.0
        batch["has_true"] = np.zeros(b, np.float32)
        batch["id"] = np.array([b"%016d" % i for i in range(start, start + b)])
        yield scores, batch


def dense_path(num_images, num_classes, verified, batch_size) -> metrics.Report:
    """What `prediction.predict` and `metrics.evaluate` hold: [N, d] arrays of every record's labels and scores."""
    parts = {k: [] for k in ("scores", *_LABEL_KEYS)}
    for scores, batch in batches(num_images, num_classes, verified, batch_size):
        parts["scores"].append(scores)
        for key in _LABEL_KEYS:
            parts[key].append(batch[key])
    p = {k: np.concatenate(v) for k, v in parts.items()}
    del parts
    return metrics.evaluate(p["scores"], p["verified_labels"], p["verified_mask"])


def entries_path(num_images, num_classes, verified, batch_size) -> metrics.Report:
    """What `prediction.predict_entries` keeps of each batch: O(verified entries + N)."""
    collector = EntriesCollector()
    for scores, batch in batches(num_images, num_classes, verified, batch_size):
        collector.add({"scores": scores, **batch})
        del scores, batch
    p = collector.result()
    del collector
    return metrics.evaluate(p.entries)


def _measure(fn, *args):
    tracemalloc.start()
    start = time.perf_counter()
    report = fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return report, peak, seconds


def main(argv):
    del argv
    n, d = _NUM_IMAGES.value, _NUM_CLASSES.value
    args = (n, d, _VERIFIED.value, _BATCH_SIZE.value)
    print(f"{n} images x {d} classes, {_VERIFIED.value} verified labels per image, batches of {_BATCH_SIZE.value}")
    peaks, reports = {}, {}
    for name, path in (("dense", dense_path), ("entries", entries_path)):
        reports[name], peaks[name], seconds = _measure(path, *args)
        per_image = peaks[name] / n / 1024
        print(f"{name + ':':9s}peak {peaks[name] / 2**20:10.1f} MiB ({per_image:.1f} KiB per image), {seconds:.1f} s")
    report = reports["dense"]
    print(f"mAP {report.map!r} APall {report.ap_all!r} top-1 {report.top1!r}")
    same = all(
        np.array_equal(getattr(reports["entries"], k), getattr(report, k), equal_nan=True)
        for k in ("per_class_ap", "map", "ap_all", "top1", "classes_without_positives")
    )
    print(f"reports equal: {same}")
    print(f"ratio: {peaks['dense'] / peaks['entries']:.2f}")


if __name__ == "__main__":
    app.run(main)
