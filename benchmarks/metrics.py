r"""Per-class AP of `nlr_tf.models.metrics` against a scikit-learn loop.

Run:

    python benchmarks/metrics.py

100,000 images x 1,000 classes of scores (rounded to 3 decimals, so there
are ties), labels and a verification mask (half the entries). The reference
is the straightforward loop: `sklearn.metrics.average_precision_score` on
each class's verified entries. Both run in the same process; the values
must agree to 1e-6. Last line: `ratio: X.XX` = sklearn time / ours
(target >= 10).
"""

import time

import numpy as np
from absl import app, flags
from sklearn.metrics import average_precision_score

from nlr_tf.models import metrics

_NUM_IMAGES = flags.DEFINE_integer("num_images", 100_000, "Images.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 1_000, "Classes.")


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    shape = (_NUM_IMAGES.value, _NUM_CLASSES.value)
    labels = (rng.random(shape, dtype=np.float32) < 0.05).astype(np.float32)
    scores = np.round(rng.random(shape, dtype=np.float32) * 0.5 + 0.5 * labels * rng.random(shape, dtype=np.float32), 3)
    mask = (rng.random(shape, dtype=np.float32) < 0.5).astype(np.float32)

    start = time.perf_counter()
    ours = metrics.average_precision(scores, labels, mask)
    ours_time = time.perf_counter() - start

    start = time.perf_counter()
    reference = np.empty(shape[1])
    for c in range(shape[1]):
        keep = mask[:, c] > 0
        reference[c] = average_precision_score(labels[keep, c], scores[keep, c])
    sklearn_time = time.perf_counter() - start

    max_diff = float(np.nanmax(np.abs(ours - reference)))
    print(f"{shape[0]} images x {shape[1]} classes, half the entries verified")
    print(f"  nlr_tf.models.metrics: {ours_time:8.2f} s")
    print(f"  sklearn loop:              {sklearn_time:8.2f} s")
    print(f"  largest difference in AP:  {max_diff:.2e} ({'identical to 1e-6' if max_diff <= 1e-6 else 'MISMATCH'})")
    print(f"ratio: {sklearn_time / ours_time:.2f}")


if __name__ == "__main__":
    app.run(main)
