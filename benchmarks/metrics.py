r"""Per-class AP of `nlr_tf.metrics` against a scikit-learn loop.

Run:

    python benchmarks/metrics.py

100,000 images x 1,000 classes of labels (about 5 % positive), a
verification mask (half the entries) and scores, in two cases that share the
labels and the mask:

- continuous: float32 scores, not rounded (almost no ties);
- ties: the same scores rounded to 3 decimals (1,001 levels: many ties).

For each case the reference is the straightforward loop:
`sklearn.metrics.average_precision_score` on each class's verified entries
(`--reference_repeats` runs, median). `metrics.average_precision` runs in the
same process, `--repeats` times before the reference and as many after it
(the machine may be shared: its load changes), and its time is the median of
those runs; its values must agree with the reference to 1e-6. `metrics.ap_all` (class-agnostic AP over the 50 M verified
entries) is timed too, and checked against scikit-learn with `--check_ap_all`
(slow). Each case prints its ratio = sklearn time / ours; the last line is
`ratio: X.XX`, the lower of the two ratios (target >= 20).
"""

import time

import numpy as np
from absl import app, flags
from sklearn.metrics import average_precision_score

from nlr_tf import metrics

_NUM_IMAGES = flags.DEFINE_integer("num_images", 100_000, "Images.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 1_000, "Classes.")
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "Runs of nlr_tf's per-class AP before and after the reference, and of APall (median).", lower_bound=1
)
_REFERENCE_REPEATS = flags.DEFINE_integer(
    "reference_repeats", 1, "Runs of the sklearn loop per case (median).", lower_bound=1
)
_CHECK_AP_ALL = flags.DEFINE_bool(
    "check_ap_all", False, "Also compare APall with sklearn on the verified entries (slow)."
)


def _times(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def _median_time(fn, repeats):
    times, result = _times(fn, repeats)
    return float(np.median(times)), result


def _sklearn_loop(scores, labels, mask):
    reference = np.empty(scores.shape[1])
    for c in range(scores.shape[1]):
        keep = mask[:, c] > 0
        reference[c] = average_precision_score(labels[keep, c], scores[keep, c])
    return reference


def _fmt(times):
    return " ".join(f"{t:.2f}" for t in times)


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    shape = (_NUM_IMAGES.value, _NUM_CLASSES.value)
    labels = (rng.random(shape, dtype=np.float32) < 0.05).astype(np.float32)
    continuous = rng.random(shape, dtype=np.float32) * 0.5 + 0.5 * labels * rng.random(shape, dtype=np.float32)
    mask = (rng.random(shape, dtype=np.float32) < 0.5).astype(np.float32)
    print(f"{shape[0]} images x {shape[1]} classes, {int(np.count_nonzero(mask))} entries verified")

    ratios = []
    for case, scores in (("continuous", continuous), ("ties (3 decimals)", np.round(continuous, 3))):
        levels = np.unique(scores[:, 0]).size
        ours_times, ours = _times(lambda: metrics.average_precision(scores, labels, mask), _REPEATS.value)
        sklearn_time, reference = _median_time(lambda: _sklearn_loop(scores, labels, mask), _REFERENCE_REPEATS.value)
        ours_times += _times(lambda: metrics.average_precision(scores, labels, mask), _REPEATS.value)[0]
        ours_time = float(np.median(ours_times))
        all_time, all_ours = _median_time(lambda: metrics.ap_all(scores, labels, mask), _REPEATS.value)
        max_diff = float(np.nanmax(np.abs(ours - reference)))
        ratios.append(sklearn_time / ours_time)
        print(f"{case}: {levels} distinct scores in class 0 ({shape[0]} images)")
        print(f"  nlr_tf per-class AP:       {ours_time:8.3f} s (median of {len(ours_times)}: {_fmt(ours_times)})")
        print(f"  sklearn loop:              {sklearn_time:8.3f} s (median of {_REFERENCE_REPEATS.value})")
        print(
            f"  largest difference in AP:  {max_diff:.2e} ({'identical to 1e-6' if max_diff <= 1e-6 else 'MISMATCH'})"
        )
        print(f"  ratio:                     {ratios[-1]:8.2f}")
        line = f"  nlr_tf APall:              {all_time:8.3f} s (median of {_REPEATS.value}), APall = {all_ours:.6f}"
        if _CHECK_AP_ALL.value:
            keep = mask > 0
            start = time.perf_counter()
            all_reference = average_precision_score(labels[keep], scores[keep])
            line += f"; sklearn {time.perf_counter() - start:.2f} s, difference {abs(all_ours - all_reference):.2e}"
        print(line)
    print(f"ratio: {min(ratios):.2f}")


if __name__ == "__main__":
    app.run(main)
