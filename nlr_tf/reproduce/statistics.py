"""The paired t-test that decides each cell of a claim, its verdict and its text.

A cell compares two rows (a above b) at one clean fraction, seed by seed
(the runs of one seed share their noisy model and data): a paired t-test of
the differences a − b over the seeds both rows have. A cell is held when the
mean difference is in the claimed direction with a two-sided p < 0.05,
reversed when it is the other way with p < 0.05, and not shown otherwise;
one seed shows only a direction.
"""

import math
from typing import Any, Optional

import numpy as np
from scipy import stats

from nlr_tf import metrics

ALPHA = 0.05  # a cell is held (or reversed) at a two-sided p below this
HELD, REVERSED, NOT_SHOWN = "held", "reversed", "not shown"
ONE_SEED, NOT_MEASURED = "direction at one seed", "not measured"
_EQUAL = 1e-12  # differences of metrics in [0, 1] closer than this are equal (floating-point noise)


def paired_t_test(differences, margin: float = 0.0) -> dict[str, Any]:
    """Student's paired t-test of the differences a − b against −margin (two-sided).

    Tests whether mean(d) + margin differs from 0, with d the seed-paired
    differences: SE = sample std of d (ddof=1) / √n, t = (mean(d) + margin)
    / SE, p from Student's t with n − 1 degrees of freedom, as
    `scipy.stats.ttest_rel` (for margin 0). When every difference is the
    same number (zero variance, n ≥ 2), the mean is known exactly: t is
    ±inf and p = 0 if mean(d) + margin is not zero, and t is None and
    p = 1 if it is.

    Args:
        differences: sequence of float. a − b, one per seed.
        margin: float. How far below b the claim still lets a be (0: a above b).

    Returns:
        dict with `seeds` (n), `mean` (of d, without the margin), `margin`,
        `sd`, `se`, `t`, `df`, `p` (`sd` to `p` None for one seed) and
        `zero_variance`.
    """
    d = np.asarray(differences, dtype=np.float64)
    n, mean = len(d), float(d.mean())
    out = {"seeds": n, "mean": mean, "margin": margin, "sd": None, "se": None, "t": None, "df": None, "p": None}
    out["zero_variance"] = n > 1 and bool(np.ptp(d) <= _EQUAL)
    if n < 2:
        return out
    sd = 0.0 if out["zero_variance"] else float(np.std(d, ddof=1))
    shifted = mean + margin
    out.update(sd=sd, se=sd / math.sqrt(n), df=n - 1)
    if sd > 0:
        t = shifted / out["se"]
        out.update(t=t, p=float(2 * stats.t.sf(abs(t), n - 1)))
    elif abs(shifted) > _EQUAL:
        out.update(t=math.copysign(math.inf, shifted), p=0.0)
    else:
        out.update(p=1.0)
    return out


def cell_verdict(test: dict[str, Any]) -> str:
    """held / reversed / not shown for a claimed a − b > −margin; one seed: the direction it points."""
    shifted = test["mean"] + test["margin"]
    if test["seeds"] < 2:
        return f"{ONE_SEED} ({'+' if shifted > 0 else '−' if shifted < 0 else '0'})"
    if test["p"] < ALPHA:
        return HELD if shifted > 0 else REVERSED
    return NOT_SHOWN


def _number(x: float) -> str:
    return ("-∞" if x < 0 else "∞") if math.isinf(x) else f"{x:.2f}"


def test_text(d: dict[str, Any]) -> str:
    """The difference in points, its SE, t and p, each rounded once from its full-precision value."""
    text = f"{100 * d['mean']:+.2f} points"
    if d["margin"]:
        text += f" (claimed above {-100 * d['margin']:+.2f})"
    if d["seeds"] < 2:
        return text + " (one seed: no SE, t or p)"
    if d["t"] is None:
        return text + f", SE {100 * d['se']:.2f}, t({d['df']}) undefined (every difference zero), p = 1"
    p = "p = 0 (zero variance)" if d["p"] == 0 else ("p < 0.001" if d["p"] < 0.001 else f"p = {d['p']:.3f}")
    return text + f", SE {100 * d['se']:.2f}, t({d['df']}) = {_number(d['t'])}, {p}"


BOOTSTRAP_DRAWS = 200  # resamples of the test images behind each interval
BOOTSTRAP_LEVEL = 0.95


def bootstrap_interval(
    predictions, metric: str, draws: int = BOOTSTRAP_DRAWS, level: float = BOOTSTRAP_LEVEL, seed: int = 0
) -> Optional[tuple[float, float]]:
    """The precision of a cell's test metric: a percentile bootstrap interval over the test images.

    The test images are drawn with replacement `draws` times; each draw
    scores every seed's run on the same images (the seeds share the test
    set) and takes the mean over seeds, as the table does. A class left
    without a verified positive in a draw is left out of that draw's mAP, as
    the metrics do.

    Args:
        predictions: list of `metrics.VerifiedEntries` (`evaluator.read_scores`), one per seed.
        metric: "mAP", "APall" or "top1".
        seed: int. The draws' seed (the same draws for every cell of a table).

    Returns:
        (low, high) at `level`, or None if the runs were not scored on the same labelled images.
    """
    first = predictions[0]

    def same_images(p) -> bool:  # the same images, verified entries (image, class) and labels
        same = p.num_rows == first.num_rows
        arrays = ("class_starts", "rows", "labels")
        return same and all(np.array_equal(getattr(p, k), getattr(first, k)) for k in arrays)

    if not all(same_images(p) for p in predictions):
        return None
    n = first.num_rows
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        idx = rng.integers(0, n, n)
        values.append(np.mean([metrics.metric(metric, p.take(idx)) for p in predictions]))
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)
