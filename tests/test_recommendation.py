"""The recommendation is computed from the results: leaders, what they beat, where clean labels stop paying."""

import zlib

import numpy as np

from nlr_tf.reproduce import recommendation
from nlr_tf.reproduce.results import Results

ML = "multi_label"


def _records(values, seeds=(0, 1, 2, 3), noise=(0.0, 0.004, -0.003, 0.001)):
    """values: fraction -> row -> mean mAP; each seed adds the same small offset to every row (paired), and each
    run a noise of its own (seeded by row and fraction), so the tests have a spread."""
    out = []
    for fraction, rows in values.items():
        for row, m in rows.items():
            rng = np.random.default_rng(zlib.crc32(f"{row}{fraction}".encode()))
            for s, e in zip(seeds, noise):
                jitter = float(rng.normal(0, 0.003))
                out.append(
                    {"variant": ML, "row": row, "label": row.upper(), "fraction": fraction, "seed": s,
                     "mAP": m + e + jitter, "APall": m, "top1": m, "eval_history": []}
                )
    return out


def test_the_leader_what_it_beats_and_where_more_clean_labels_stop_paying():
    values = {
        0.1: {"nr_sigmoid": 0.80, "ft_last": 0.70, "ft_whole": 0.799, "gt": 0.99, "logreg_clean": 0.9},
        0.25: {"nr_sigmoid": 0.85, "ft_last": 0.75, "ft_whole": 0.87, "gt": 0.99},
        0.5: {"nr_sigmoid": 0.86, "ft_last": 0.76, "ft_whole": 0.875, "gt": 0.99},
        1.0: {"nr_sigmoid": 0.87, "ft_last": 0.77, "ft_whole": 0.876, "gt": 0.99},
    }
    rec = recommendation.recommend(Results(_records(values)), ML)
    leaders = [(b["fraction"], b["leader"]) for b in rec["budgets"]]
    # GT and the logistic regression are not methods to deploy: never the leader.
    assert leaders == [(0.1, "nr_sigmoid"), (0.25, "ft_whole"), (0.5, "ft_whole"), (1.0, "ft_whole")]
    first = rec["budgets"][0]
    assert [o["row"] for o in first["above"]] == ["ft_last"]
    assert [o["row"] for o in first["within_noise"]] == ["ft_whole"]
    # 0.25's leader (87.0) is within noise of 1.0's (87.6); 0.1's (80.0) is not.
    assert rec["enough"] == 0.25 and rec["enough_test"]["p"] >= 0.05
    text = recommendation.recommendation_markdown(rec)
    assert "**10 %**: NR_SIGMOID leads (mAP" in text and "significantly above FT_LAST (+" in text
    assert f"stop paying beyond **{100 * rec['enough']:g} %**" in text
    # The same numbers with one budget more at the top that pays: no budget is enough.
    values[2.0] = {"nr_sigmoid": 0.95, "ft_whole": 0.96, "gt": 0.99}
    rec = recommendation.recommend(Results(_records(values)), ML)
    assert rec["enough"] is None and "pay up to the largest budget" in recommendation.recommendation_markdown(rec)


def test_one_seed_shows_directions_only_and_calls_no_budget_enough():
    values = {0.1: {"nr_sigmoid": 0.80, "ft_last": 0.70}, 1.0: {"nr_sigmoid": 0.81, "ft_last": 0.75}}
    rec = recommendation.recommend(Results(_records(values, seeds=(0,), noise=(0.0,))), ML)
    assert rec["enough"] is None and not rec["tested"]
    text = recommendation.recommendation_markdown(rec)
    assert "direction at one seed" in text and "significantly" not in text


def test_rows_limits_the_leaders():
    values = {0.1: {"nr_sigmoid": 0.80, "ft_last": 0.70}}
    rec = recommendation.recommend(Results(_records(values)), ML, rows=("ft_last",))
    assert rec["budgets"][0]["leader"] == "ft_last" and "one budget only" in recommendation.recommendation_markdown(rec)


def test_a_user_datasets_step_caps_are_passes_over_its_own_data_within_bounds():
    from nlr_tf.reproduce import budgets

    same, lines = budgets.scaled_to_data(budgets.FULL, budgets.REFERENCE_RECORDS)
    assert same.heads.max_steps == budgets.FULL.heads.max_steps and same.whole == budgets.FULL.whole
    ten, _ = budgets.scaled_to_data(budgets.FULL, {k: 10 * v for k, v in budgets.REFERENCE_RECORDS.items()})
    assert ten.scratch.max_steps == 10 * budgets.FULL.scratch.max_steps
    assert ten.cleannet_steps == 10 * budgets.FULL.cleannet_steps
    tiny, lines = budgets.scaled_to_data(budgets.FULL, {"noisy": 100, "clean": 10})
    assert tiny.heads.max_steps == budgets.MIN_STEPS and "(at its lower bound)" in lines[2]
    huge, lines = budgets.scaled_to_data(budgets.FULL, {"noisy": 9_000_000, "clean": 40_000})
    assert huge.heads.max_steps == budgets.MAX_STEPS and "(at its upper bound)" in lines[2]
    assert lines[1].startswith("whole: at most 133,333 steps of 40")


def _scored(rng, n, quality):
    """Two-class multi-label scores of `n` images: the truth plus noise (less noise, higher `quality`)."""
    labels = (rng.random((n, 2)) < 0.4).astype(np.uint8)
    scores = labels + rng.normal(0, 1 / quality, (n, 2))
    return {"scores": scores.astype(np.float32), "labels": labels, "mask": np.ones_like(labels)}


def test_the_test_metrics_precision_is_a_bootstrap_over_test_images():
    from nlr_tf import metrics
    from nlr_tf.reproduce.statistics import bootstrap_interval

    def entries(p):
        return metrics.VerifiedEntries.from_dense(p["scores"], p["labels"], p["mask"])

    rng = np.random.default_rng(0)
    small = [_scored(rng, 60, 1.0)]
    small.append(dict(small[0], scores=small[0]["scores"] + rng.normal(0, 0.5, (60, 2)).astype(np.float32)))
    low, high = bootstrap_interval([entries(p) for p in small], "mAP")
    mean = np.mean([metrics.evaluate(p["scores"], p["labels"], p["mask"]).map for p in small])
    assert low < mean < high and high - low > 0.05
    # Each draw's metrics are the dense metrics of the drawn rows.
    draw = np.random.default_rng(0)
    draws = [draw.integers(0, 60, 60) for _ in range(2)]
    want = [
        np.mean([metrics.metric("APall", q["scores"][i], q["labels"][i], q["mask"][i]) for q in small]) for i in draws
    ]
    assert bootstrap_interval([entries(p) for p in small], "APall", draws=2) == tuple(
        np.nanpercentile(want, [2.5, 97.5])
    )
    # Sixteen times the test images: about a quarter of the width.
    large = [_scored(rng, 960, 1.0)]
    large_low, large_high = bootstrap_interval([entries(p) for p in large], "mAP")
    assert (large_high - large_low) < 0.5 * (high - low)
    # A perfect ranking on every draw: no width. Runs scored on other images: no interval.
    perfect = [entries(dict(small[0], scores=small[0]["labels"].astype(np.float32)))]
    assert bootstrap_interval(perfect, "mAP") == (1.0, 1.0)
    other = entries(dict(small[1], labels=1 - small[1]["labels"]))
    assert bootstrap_interval([entries(small[0]), other], "mAP") is None
    # The same draws for the same seed.
    assert bootstrap_interval([entries(p) for p in small], "APall") == bootstrap_interval(
        [entries(p) for p in small], "APall"
    )


def test_one_metric_alone_equals_the_full_evaluation():
    from nlr_tf import metrics

    p = _scored(np.random.default_rng(1), 50, 2.0)
    report = metrics.evaluate(p["scores"], p["labels"], p["mask"])
    assert metrics.metric("mAP", p["scores"], p["labels"], p["mask"]) == report.map
    assert metrics.metric("APall", p["scores"], p["labels"], p["mask"]) == report.ap_all
