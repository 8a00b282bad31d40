"""nlr-reproduce: a tiny reproduction end to end, and the tables' arithmetic."""

import dataclasses
import json
import math
import os

import pytest
from cli_util import run_cli
from scipy import stats

from nlr_tf.evaluation import plotting
from nlr_tf.reproduce import budgets, claims, markdown, plan, plots, protocol, report, statistics
from nlr_tf.reproduce.results import Results, rank_agreement
from nlr_tf.reproduce.rows import CLAIM_ROWS, MULTI_LABEL_REFERENCES, MULTI_LABEL_ROWS, PREMISE_ROWS

TINY = (
    "--quick",
    "--step_scale=0.02",
    "--num_train=300",
    "--num_val=50",
    "--num_test=100",
    "--source_images=760,76,152",
)


def _record(variant, row, fraction, seed, m, top1=0.0, label=None, **extra):
    return {
        "stage": "heads",
        "variant": variant,
        "row": row,
        "label": label or row,
        "fraction": fraction,
        "seed": seed,
        "mAP": m,
        "APall": m / 2,
        "top1": top1,
        "eval_history": [],
        **extra,
    }


def test_gap_closed_means_over_seeds_and_claims():
    ml = "multi_label"
    records = [
        _record(ml, "noisy", None, 0, 0.60),
        _record(ml, "noisy", None, 1, 0.62),
        _record(ml, "gt", None, 0, 0.80),
        _record(ml, "gt", None, 1, 0.82),
        _record(ml, "nr_sigmoid", 0.05, 0, 0.70),
        _record(ml, "nr_sigmoid", 0.05, 1, 0.74),
        _record(ml, "ft_last", 0.05, 0, 0.65),
        _record(ml, "ft_last", 0.05, 1, 0.70),
        _record(ml, "ft_mixed", 0.05, 0, 0.65),
        _record(ml, "ft_mixed", 0.05, 1, 0.65),
        _record(ml, "lc_joint", 0.05, 0, 0.64),
        _record(ml, "lc_joint", 0.05, 1, 0.64),
        _record(ml, "logreg_clean", 0.05, 0, 0.70),
        _record(ml, "logreg_clean", 0.05, 1, 0.70),
    ]
    res = Results(records)
    assert res.mean(ml, "noisy", 0.05, "mAP") == pytest.approx(0.61)  # shared rows count at every fraction
    # The spread is the sample standard deviation over seeds (ddof=1): 0.70 and 0.74 give 0.02 * sqrt(2).
    assert res.std(ml, "nr_sigmoid", 0.05, "mAP") == pytest.approx(0.02 * math.sqrt(2))
    assert res.std(ml, "nr_sigmoid", 0.05, "mAP") == pytest.approx(stats.tstd([0.70, 0.74]))
    assert res.gap_closed(ml, "nr_sigmoid", 0.05, "mAP") == pytest.approx((0.72 - 0.61) / (0.81 - 0.61))
    assert res.cell(ml, "nr_sigmoid", 0.05, "mAP") == "72.00 ± 2.83"
    # Seed-paired differences: nr − ft_last is +0.05 and +0.04; SE = std(ddof=1) / sqrt(2) = 0.005, t = 9 with one
    # degree of freedom: p = 0.070, so two seeds that both point the claimed way do not show it.
    d = res.difference(ml, "nr_sigmoid", "ft_last", 0.05, "mAP")
    assert d["mean"] == pytest.approx(0.045) and d["se"] == pytest.approx(0.005) and d["t"] == pytest.approx(9.0)
    assert d["df"] == 1 and d["p"] == pytest.approx(stats.ttest_rel([0.70, 0.74], [0.65, 0.70]).pvalue)
    assert d["verdict"] == statistics.NOT_SHOWN
    d = res.difference(ml, "nr_sigmoid", "ft_mixed", 0.05, "mAP")  # +0.05, +0.09: SE 0.02, t 3.5, p 0.18
    assert d["verdict"] == statistics.NOT_SHOWN and d["p"] > 0.05
    by_words = {c["claim"]: c for c in claims.claims(res, 0.05)}
    nr = by_words["Hu T2: nr_sigmoid above FT-L, FT-M, Veit WP and TJ in mAP at every clean fraction"]
    assert nr["verdict"] == statistics.NOT_SHOWN and [c["b"] for c in nr["cells"]] == [
        "ft_last",
        "ft_mixed",
        "lc_joint",
    ]
    assert "  - nr_sigmoid − ft_last at 5 %: +4.50 points, SE 0.50, t(1) = 9.00, p = 0.070: not shown" in (
        claims.claim_markdown(nr).splitlines()
    )
    nr_tanh = by_words["Hu T2: nr_tanh above FT-L, FT-M, Veit WP and TJ in mAP at every clean fraction"]
    assert nr_tanh["verdict"] == statistics.NOT_MEASURED and nr_tanh["cells"] == []
    # ft_last is 2.5 points below the clean-set logistic regression on average, but at one seed level with it: the
    # protocol check (ft_last − logreg_clean > −0.5 points, by the same rule) is not shown either way.
    check = by_words["protocol: ft_last within 0.5 mAP of (or above) the clean-set logistic regression"]
    assert check["verdict"] == statistics.NOT_SHOWN and check["cells"][0]["mean"] == pytest.approx(-0.025)
    assert check["cells"][0]["t"] == pytest.approx(stats.ttest_1samp([-0.045, 0.005], 0.0).statistic)
    # No gap when the upper bound is not above the baseline: the share is undefined, not a large number.
    flipped = [dict(r, mAP=0.5) if r["row"] == "gt" else r for r in records]
    assert Results(flipped).gap_closed(ml, "nr_sigmoid", 0.05, "mAP") is None


def test_regime_findings_name_the_leader_per_fraction_and_where_whole_network_fine_tuning_overtakes():
    ml = "multi_label"
    values = {  # fraction -> row -> mAP
        0.01: {"nr_sigmoid": 0.70, "ft_last": 0.66, "ft_whole": 0.68},
        0.10: {"nr_sigmoid": 0.72, "ft_last": 0.74, "ft_whole": 0.80},
    }
    records = [_record(ml, r, f, s, v) for f, rows in values.items() for r, v in rows.items() for s in (0, 1)]
    records += [_record(ml, "noisy", None, s, 0.6) for s in (0, 1)] + [_record(ml, "gt", None, s, 0.9) for s in (0, 1)]
    text = markdown.regime_findings(Results(records), ml)
    assert "1 %: nr_sigmoid (70.00); 10 %: ft_last (74.00)." in text
    assert "Noisy-FT-W is above the best of them at 10 %: -2.00 points at 1 %, +6.00 points at 10 %." in text


def test_premise_table_pairs_each_rotation_pretrained_row_with_its_counterpart():
    ml = "multi_label"
    records = []
    for seed, (base, rotated) in enumerate(((0.60, 0.66), (0.62, 0.67))):
        records += [_record(ml, "noisy", None, seed, base), _record(ml, "rot_noisy", None, seed, rotated)]
        records += [_record(ml, "ft_last", 0.1, seed, base + 0.05), _record(ml, "rot_ft_last", 0.1, seed, base)]
    res = Results(records)
    lines = markdown.premise_table(res, 0.1).splitlines()
    assert len(lines) == 4  # header, rule, noisy, ft_last: rows not run are left out
    assert "61.00 ± 1.41" in lines[2] and "66.50 ± 0.71" in lines[2]
    assert "+5.50 points, SE 0.50, t(1) = 11.00, p = 0.058: not shown" in lines[2]
    # Every seed 5 points lower: zero variance, so t is infinite and p = 0.
    assert "-5.00 points, SE 0.00, t(1) = -∞, p = 0 (zero variance): reversed" in lines[3]
    # The regime map leaves the investigation's rows out.
    assert "rot_noisy" not in markdown.regime_table(res, ml)


def test_the_regime_map_draws_at_most_eight_compared_rows_each_in_its_own_style(tmp_path):
    ml = "multi_label"
    rows = [r.key for r in MULTI_LABEL_ROWS] + ["logreg_clean", "confident_learning"]
    records = [_record(ml, r, f, 0, 0.7 + 0.01 * i) for i, r in enumerate(rows) for f in (0.01, 0.1)]
    records += [_record(ml, "cleannet", 0.1, 0, 0.5)]  # one fraction: nothing to draw
    records += [_record(ml, "noisy", None, 0, 0.6), _record(ml, "gt", None, 0, 0.9)]
    res = Results(records)
    drawn = [row for row, _ in plots.map_rows(res, ml)]
    assert drawn == [r for r in plots.MAP_ROWS[ml] if r in rows] and len(drawn) <= plots.MAX_LINES
    styles = [plotting.series_style(i) for i in range(plots.MAX_LINES)]
    assert len({s["color"] for s in styles}) == len({s["marker"] for s in styles}) == plots.MAX_LINES
    # A dataset whose rows are none of the compared ones still gets a map of its first rows.
    other = Results([_record(ml, f"row{i}", f, 0, 0.7) for i in range(12) for f in (0.1, 0.5)])
    assert len(plots.map_rows(other, ml)) == plots.MAX_LINES
    plots.plot_regime_map(res, str(tmp_path / "map.png"))
    assert (tmp_path / "map.png").stat().st_size > 0


T5_ML = "Hu T5 (multi-label): g, h jointly above g alone and above h alone in mAP"


def _t5_records(g_differences, h_differences, seeds=(0, 1, 2)):
    """Hu Table 5's multi-label rows at 10 %: nr_sigmoid minus g_only and minus h_only by the given amounts."""
    ml, records = "multi_label", []
    for s in seeds:
        base = 0.60 + 0.013 * s * s  # seeds differ far more than the differences do: only pairing shows them
        records += [
            _record(ml, "nr_sigmoid", 0.1, s, base),
            _record(ml, "g_only", 0.1, s, base - g_differences[s]),
            _record(ml, "h_only", 0.1, s, base - h_differences[s]),
        ]
    return records


def test_paired_t_test_is_scipys_ttest_rel():
    ml = "multi_label"
    a, b = [0.712, 0.695, 0.741, 0.705], [0.690, 0.689, 0.702, 0.700]
    records = [_record(ml, "nr_sigmoid", 0.1, s, v) for s, v in enumerate(a)]
    records += [_record(ml, "ft_last", 0.1, s, v) for s, v in enumerate(b)]
    records.append(_record(ml, "ft_last", 0.1, 7, 0.5))  # a seed only one row has is left out
    d = Results(records).difference(ml, "nr_sigmoid", "ft_last", 0.1, "mAP")
    expected = stats.ttest_rel(a, b)
    assert d["t"] == pytest.approx(expected.statistic) and d["p"] == pytest.approx(expected.pvalue)
    assert d["df"] == 3 and d["seeds"] == 4
    diffs = [x - y for x, y in zip(a, b)]
    assert d["sd"] == pytest.approx(stats.tstd(diffs)) and d["se"] == pytest.approx(stats.sem(diffs))
    # Zero variance: the same non-zero difference at every seed is certain (t infinite, p = 0); all zero shows nothing.
    same = statistics.paired_t_test([0.02, 0.02, 0.02])
    assert same["zero_variance"] and same["t"] == math.inf and same["p"] == 0.0
    assert statistics.cell_verdict(same) == statistics.HELD
    assert statistics.cell_verdict(statistics.paired_t_test([-0.02, -0.02])) == statistics.REVERSED
    zero = statistics.paired_t_test([0.0, 0.0, 0.0])
    assert zero["t"] is None and zero["p"] == 1.0 and statistics.cell_verdict(zero) == statistics.NOT_SHOWN
    # A margin tests a − b > −margin: −0.2 points is within 0.5 points.
    assert (
        statistics.cell_verdict(statistics.paired_t_test([-0.002, -0.0021, -0.0019], margin=0.005)) == statistics.HELD
    )


def test_claim_verdicts_held_reversed_not_shown_and_one_seed():
    def claim(records):
        found = {c["claim"]: c for c in claims.claims(Results(records), 0.1)}[T5_ML]
        return found, claims.claim_markdown(found)

    held, text = claim(_t5_records([0.050, 0.052, 0.048], [0.030, 0.031, 0.029]))
    assert held["verdict"] == statistics.HELD and [c["verdict"] for c in held["cells"]] == [
        statistics.HELD,
        statistics.HELD,
    ]
    assert text.startswith(f"- **held**: {T5_ML} (2 cells: 2 held).")
    assert "  - nr_sigmoid − g_only at 10 %: +5.00 points, SE 0.12, t(2) = 43.30, p < 0.001: held" in text
    # One cell clearly the other way: the claim reads reversed, though the other cell holds.
    reversed_, text = claim(_t5_records([0.050, 0.052, 0.048], [-0.030, -0.031, -0.029]))
    assert reversed_["verdict"] == statistics.REVERSED and reversed_["summary"] == "2 cells: 1 held, 1 reversed"
    assert text.startswith("- **reversed**:") and text.endswith(": reversed")
    # Differences that disagree between seeds: not shown (neither held nor reversed).
    unclear, _ = claim(_t5_records([0.05, -0.01, 0.02], [0.030, 0.031, 0.029]))
    assert unclear["verdict"] == statistics.NOT_SHOWN and unclear["cells"][0]["verdict"] == statistics.NOT_SHOWN
    # One seed: a direction, never held or reversed, however large the difference.
    one, text = claim(_t5_records([0.05], [-0.03], seeds=(0,)))
    assert one["verdict"] == statistics.ONE_SEED and one["summary"].startswith("1 of 2 cells point the claimed way")
    assert [c["verdict"] for c in one["cells"]] == [f"{statistics.ONE_SEED} (+)", f"{statistics.ONE_SEED} (−)"]
    assert text.startswith("- **direction at one seed**:") and "**held**" not in text and "reversed" not in text
    assert "+5.00 points (one seed: no SE, t or p): direction at one seed (+)" in text
    # The markdown is rounded once from the full-precision numbers.
    assert one["cells"][0]["mean"] == pytest.approx(0.05) and one["cells"][0]["p"] is None


def test_runs_at_their_step_cap_are_marked_and_listed():
    ml = "multi_label"
    records = []
    for s in (0, 1, 2):
        records += [
            _record(ml, "noisy", None, s, 0.60, best_step=4000 if s == 2 else 3000, max_steps=4000),
            _record(ml, "gt", None, s, 0.80, best_step=100, max_steps=4000),
            # ft_last at 10 % stopped at its cap in seed 1 only.
            _record(ml, "ft_last", 0.1, s, 0.65 + 0.01 * s, best_step=5000 if s == 1 else 1200, max_steps=5000),
            _record(ml, "nr_sigmoid", 0.1, s, 0.70 + 0.01 * s, best_step=800, max_steps=5000),
            # Veit WP's cap counts its 1,000 pretraining steps, as its best step does: 5,000 is not its cap.
            _record(ml, "lc_pretrained", 0.1, s, 0.66, best_step=5000, max_steps=6000),
            _record(ml, "logreg_clean", 0.1, s, 0.66, best_step=None, max_steps=None),
        ]
    res = Results(records)
    assert res.at_cap(ml, "ft_last", 0.1) == (1, 3) and res.at_cap(ml, "lc_pretrained", 0.1) == (0, 3)
    assert res.cell(ml, "ft_last", 0.1, "mAP") == "66.00 ± 1.00‡" and "‡" not in res.cell(ml, "nr_sigmoid", 0.1, "mAP")
    assert res.at_cap(ml, "logreg_clean", 0.1) == (0, 0)
    table = markdown.metric_table(res, ml, ("noisy", "ft_last", "lc_pretrained", "logreg_clean"), "mAP", [0.1])
    assert table.splitlines()[-1] == (
        "‡ best validation at the step cap (still improving when its budget ended) in k of n seeds: "
        "noisy, every fraction (trained once per seed): 1 of 3; ft_last, 10 %: 1 of 3."
    )
    assert "60.00‡" not in table and "60.00 ± 0.00‡ (0 %)" in table
    assert res.as_dict()["at_cap"] == [
        {"variant": ml, "row": "ft_last", "label": "ft_last", "fraction": 0.1, "seeds_at_cap": 1, "seeds": 3},
        {"variant": ml, "row": "noisy", "label": "noisy", "fraction": None, "seeds_at_cap": 1, "seeds": 3},
    ]
    cells = {c["row"]: c for c in res.as_dict()["cells"]}
    assert cells["ft_last"]["seeds_at_cap"] == 1 and cells["logreg_clean"]["seeds_at_cap"] is None
    # A claim whose cell involves a row at its cap says so.
    nr = [c for c in claims.claims(res, 0.1) if c["claim"].startswith("Hu T2: nr_sigmoid")][0]
    assert nr["cells"][0]["at_cap"] == [{"row": "ft_last", "seeds_at_cap": 1, "seeds": 3}]
    text = claims.claim_markdown(nr)
    assert "‡ a row at its step cap in some cells" in text.splitlines()[0]
    assert text.splitlines()[1].endswith("; ‡ ft_last at its step cap in 1 of 3 seeds")


def test_time_line_sums_wall_and_cpu_seconds():
    line = report.time_line(90.0, [3000.0, 600.0, 1800.0], [5900.0, 1300.0, 3600.0])
    assert "the 3 runs took 1 h 30 min of wall time and 3 h 00 min of CPU time" in line
    assert "1.5 min" in line and "not counted" not in line
    line = report.time_line(90.0, [3000.0, None], [5900.0, None])
    assert "1 runs finished before run times were recorded" in line
    assert "1 runs finished before CPU times were recorded" in line


def test_protocol_discloses_every_training_step_and_where_each_row_starts():
    text = protocol.protocol(budgets.FULL)
    assert f"CleanNet itself for {budgets.FULL.cleannet_steps} steps" in text
    assert f"cleaning net on the clean set alone for {budgets.FULL.cleaning_pretrain_steps} steps" in text
    assert "5-fold logistic regressions" in text and "in-sample features" in text
    assert "softmax outputs with categorical cross-entropy" in text
    assert "every single-label row" not in text
    # Where each row starts is read off the plan: Hu Table 4's fine-tuning rows start from Forward and CleanNet.
    starts = protocol.starting_points(budgets.FULL)
    assert starts[("whole", "CleanNet-wsoft")] == {"single_label": ["Fine-tune (clean set) from CleanNet"]}
    assert "Fine-tune (clean set)" in starts[("whole", "Backbone (Noisy)")]["single_label"]
    assert "Backbone (Clean)" in starts[("scratch", None)]["single_label"]
    assert "From CleanNet-wsoft: single-label: *Fine-tune (clean set) from CleanNet*." in text


def test_results_files_label_the_spread_and_carry_the_tests(tmp_path):
    records = _t5_records([0.02, 0.02, 0.02], [0.030, 0.031, 0.029])
    ml = "multi_label"
    records += [_record(ml, r, None, s, v) for s in (0, 1, 2) for r, v in (("noisy", 0.55), ("gt", 0.9))]
    for r in records:
        r.update(seconds=10.0, cpu_seconds=19.0, best_step=100, max_steps=5000)
    report.write_results(str(tmp_path), records, budgets.FULL, "nlr-reproduce --output_dir=x", 60.0, [10.0] * 9)
    md = (tmp_path / "results.md").read_text()
    assert "± is the sample standard deviation over seeds; SE in claims is sample std / √n" in md
    assert f"CleanNet itself for {budgets.FULL.cleannet_steps} steps" in md
    assert f"- **held**: {T5_ML} (2 cells: 2 held)." in md
    assert "nr_sigmoid − g_only at 10 %: +2.00 points, SE 0.00, t(2) = ∞, p = 0 (zero variance): held" in md

    def strict(constant):
        raise ValueError(f"results.json holds {constant}")

    results = json.loads((tmp_path / "results.json").read_text(), parse_constant=strict)
    check = {c["claim"]: c for c in results["checks"]["scratch"]}[T5_ML]
    assert check["verdict"] == "held" and check["cells"][0]["t"] is None and check["cells"][0]["zero_variance"]
    cell = check["cells"][1]
    assert cell["t"] == pytest.approx(stats.ttest_rel([0.6, 0.613, 0.652], [0.57, 0.582, 0.623]).statistic)
    assert cell["df"] == 2 and cell["verdict"] == "held" and 0 < cell["p"] < 0.05
    assert results["aggregate"]["scratch"]["at_cap"] == []
    assert results["runs"][0]["cpu_seconds"] == 19.0


def test_rank_agreement_between_two_reproductions():
    ml = "multi_label"
    order = ["noisy", "ft_whole", "ft_last", "ft_mixed", "lc_pretrained", "lc_joint", "nr_sigmoid", "nr_tanh"]
    order += ["nr_relu", "gt"]
    a = [_record(ml, row, None if row in ("noisy", "gt") else 0.1, 0, 0.5 + 0.01 * i) for i, row in enumerate(order)]
    same = rank_agreement(Results(a), Results(a))
    assert same["hu_table2"] == pytest.approx(1.0) and same["hu_table4"] is None
    reversed_ = [dict(r, mAP=1.0 - r["mAP"]) for r in a]
    assert rank_agreement(Results(a), Results(reversed_))["hu_table2"] == pytest.approx(-1.0)


def test_plan_covers_every_row_under_one_protocol():
    every = plan.make_plan(budgets.FULL)
    names = [r.name for r in every]
    assert len(names) == len(set(names))
    cells = [r.cell for r in every]
    assert all(cells.index(r.init) < cells.index(r.cell) for r in every if r.init)
    runs = [r for r in every if r.benchmark == "scratch"]
    ml = [r for r in runs if r.variant == "multi_label" and r.seed == 0]
    for fraction in budgets.FULL.fractions:
        expected = {r.key for r in MULTI_LABEL_ROWS + MULTI_LABEL_REFERENCES if not r.shared}
        assert {r.row.key for r in ml if r.fraction == fraction} >= expected
    assert {r.row.key for r in ml if r.fraction == 0.10} >= {"h_only", "g_only", "nr_sigmoid_whole"}
    cells = [r.cell for r in runs]
    assert all(cells.index(r.init) < cells.index(r.cell) for r in runs if r.init)
    assert {r.clean_split for r in ml if r.row.key == "gt"} == {"clean_all"}
    assert {r.clean_split for r in ml if r.fraction == 0.20} == {"clean_20"}
    assert {r.seed for r in runs} == set(budgets.FULL.seeds) | set(budgets.FULL.claim_seeds)
    assert len(budgets.FULL.seeds) == 3
    # The claim seeds train the noisy model and the rows the claims compare, at the claim fractions only.
    for seed in budgets.FULL.claim_seeds:
        mine = [r for r in runs if r.seed == seed]
        assert {r.fraction for r in mine} <= {None, *budgets.FULL.claim_fractions}
        assert {r.row.key for r in mine if r.fraction} <= set(CLAIM_ROWS["multi_label"]) | set(
            CLAIM_ROWS["single_label"]
        )
        assert {r.row.key for r in mine if r.variant == "multi_label" and r.fraction == 0.05} == {
            k for k in CLAIM_ROWS["multi_label"] if k not in ("misra_visual", "misra_relevance")
        }
        assert "gt" not in {r.row.key for r in mine} and "noisy" in {r.row.key for r in mine}
    # The grid seed runs every rate of a stage's grid; the other seeds one run, its rate chosen later.
    grid = budgets.FULL.heads.learning_rates
    assert len(grid) >= 3 and max(grid) / min(grid) >= 10
    ft_last = [r for r in runs if r.row.key == "ft_last" and r.fraction == 0.05 and r.variant == "multi_label"]
    assert sorted(r.learning_rate for r in ft_last if r.seed == 0) == sorted(grid)
    assert [r.learning_rate for r in ft_last if r.seed != 0] == [None] * 4  # seeds 1, 2 and the claim seeds 3, 4
    # Single-label rows train once from scratch, as the clean-only model does (Hu, Clothing1M).
    sl = {r.row.key: r for r in runs if r.variant == "single_label" and r.fraction == 0.10 and r.seed == 0}
    assert {sl[k].row.stage for k in ("nr_sigmoid", "h_only", "g_only", "clean_only")} == {"scratch"}
    assert sl["nr_sigmoid"].init is None and sl["nr_sigmoid_from_noisy"].init.endswith("shared/noisy")
    assert {r.fraction for r in runs if r.variant == "single_label" and r.seed == 0} >= {0.02, 0.05, 0.10}
    # The rows from other works: Veit Table 2's Misra rows and the anchor-T Forward row read no clean label and
    # train once per seed; Forward (paired T), CleanNet and confident learning at every fraction; Hu Table 4's
    # at the main fraction, each with its fine-tuning row starting from that fraction's run.
    shared = {r.row.key for r in ml if r.fraction is None}
    assert {"misra_visual", "misra_relevance", "forward_anchor"} <= shared
    for fraction in budgets.FULL.fractions:
        assert {"forward", "confident_learning"} <= {r.row.key for r in ml if r.fraction == fraction}
    assert sl["forward"].row.stage == "scratch" and sl["forward"].init is None
    assert sl["forward_ft"].init == sl["forward"].cell and sl["forward_ft"].row.method == "ft_whole"
    assert sl["forward_anchor"].init == sl["forward"].noisy_cell
    # The premise investigation comes after every other run, on every seed, at the main fraction.
    premise = [i for i, r in enumerate(runs) if r.row in PREMISE_ROWS]
    assert premise == list(range(len(runs) - len(premise), len(runs)))
    assert {runs[i].fraction for i in premise} == {None, budgets.FULL.main_fraction}
    assert {runs[i].seed for i in premise} == set(budgets.FULL.seeds)
    assert not any(r.row in PREMISE_ROWS for r in plan.make_plan(budgets.QUICK))


def test_the_transfer_benchmark_starts_every_network_where_the_papers_start():
    every = plan.make_plan(budgets.FULL)
    scratch = [r for r in every if r.benchmark == "scratch"]
    transfer = [r for r in every if r.benchmark == "transfer"]
    # One source run, first, for every seed (as one set of ImageNet weights); the same rows as the scratch benchmark.
    assert transfer[0] == plan.source_run(budgets.FULL) and transfer[0].cell == plan.source_cell()
    assert [r.row.stage for r in transfer].count("source") == 1
    assert sorted(r.name.split("/", 1)[1] for r in transfer[1:] if r.row.stage != "pretext") == sorted(
        r.name.split("/", 1)[1] for r in scratch if r.row not in PREMISE_ROWS
    )
    for run in transfer[1:]:
        if run.row.stage == "scratch" and not run.row.starts_from:
            # Noisy, GT and the single-label rows: from the source backbone (the papers' ImageNet).
            assert run.init == plan.source_cell()
        elif run.row.stage in ("whole", "heads", "reference") and not run.row.starts_from:
            # The fine-tuning rows and the heads: from the noisy model of their own benchmark and seed.
            assert run.init == run.noisy_cell and run.init.startswith("transfer/")
    assert all(r.init is None for r in scratch if r.row.stage == "scratch" and not r.row.starts_from)


def test_the_transfer_benchmarks_datasets_and_starting_weights(tmp_path):
    from nlr_tf.reproduce import datasets, run_configs

    out = str(tmp_path)
    assert datasets.dataset_dir(out, "multi_label", "transfer") != datasets.dataset_dir(out, "multi_label", "scratch")
    assert datasets.dataset_dir(out, "single_label", "transfer") == datasets.dataset_dir(out, "single_label", "scratch")
    args = datasets.dataset_arguments(budgets.FULL, "multi_label", "transfer")
    assert args["annotator"] == plan.source_cell() and args["annotator_top_k"] == budgets.FULL.annotator_top_k
    assert "annotator" not in datasets.dataset_arguments(budgets.FULL, "multi_label", "scratch")
    assert datasets.dataset_arguments(budgets.FULL, "source")["source"] == "glyphs"
    source = plan.source_run(budgets.FULL)
    config = run_configs.train_config(source, out, budgets.FULL)
    assert config.dataset == datasets.dataset_dir(out, "source") and config.backbone_weights == "none"
    assert (config.train_steps, config.method) == (budgets.FULL.source.max_steps, "noisy")
    gt = next(r for r in plan.make_plan(budgets.FULL) if r.benchmark == "transfer" and r.row.key == "gt")
    config = run_configs.train_config(gt, out, budgets.FULL, "SOURCE_DIR")
    assert config.backbone_weights == os.path.join("SOURCE_DIR", "backbone.weights.h5")


def test_every_row_trains_under_its_stage_rules(tmp_path):
    from nlr_tf.reproduce.run_configs import pretext_config, train_config

    for run in plan.make_plan(budgets.FULL):
        if run.row.stage == "reference" or run.learning_rate is None:
            continue
        stage = budgets.FULL.stage(run.row.stage)
        if run.row.stage == "pretext":
            config = pretext_config(run, str(tmp_path), budgets.FULL)
            assert (config.split, config.steps, config.batch_size) == ("noisy", stage.max_steps, stage.batch_size)
            continue
        config = train_config(run, str(tmp_path), budgets.FULL, "init_dir" if run.init else "")
        # The premise investigation's noisy backbone starts from the rotation-pretrained weights, the rest of
        # its rows from that backbone, exactly as their counterparts start from the randomly initialized one.
        # On the transfer benchmark, the rows trained from the start begin with the source backbone.
        if run.benchmark == "transfer" and run.row.stage == "scratch" and not run.row.starts_from:
            assert config.backbone_weights == "init_dir/backbone.weights.h5" and not config.init_checkpoint
        elif run.row.stage == "source":
            assert config.backbone_weights == "none" and not config.init_checkpoint
        elif run.row.key == "rot_noisy":
            assert config.backbone_weights == "init_dir/backbone.weights.h5" and not config.init_checkpoint
            assert run.init.endswith("shared/rotation")
        elif run.row.key.startswith("rot_"):
            assert run.init.endswith("shared/rot_noisy") and config.init_checkpoint == "init_dir"
        else:
            assert config.backbone_weights == "none"
        pretrain = budgets.FULL.cleaning_pretrain_steps if dict(run.row.settings).get("pretrain") else 0
        assert config.train_steps - pretrain == stage.max_steps and config.cleaning_pretrain_steps == pretrain
        assert (config.eval_split, config.eval_steps) == ("val", stage.eval_steps)
        assert config.early_stopping_patience == stage.patience and config.restore_best
        assert config.batch_size == stage.batch_size
        assert config.learning_rate in {f * run.learning_rate for f in (1.0, 10.0)}
        assert config.feature_cache.endswith("features") == (run.row.stage == "heads")


@pytest.mark.slow
def test_tiny_reproduction_through_the_cli(tmp_path):
    out, book = tmp_path / "repro", tmp_path / "ledger"
    proc = run_cli("reproduce", f"--output_dir={out}", *TINY, f"--ledger={book}", timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    expected = plan.make_plan(dataclasses.replace(budgets.QUICK.scaled(0.02), source_sizes=(760, 76, 152)))
    assert len(runs) == len({r.cell for r in expected})
    assert {r["benchmark"] for r in runs} == {"scratch", "transfer"}
    assert results["fingerprint"] and results["code_version"]["commit"]
    # The premise, measured first: the source's accuracy, both annotators' noise.
    premise = results["premise"]
    assert 0 <= premise["source"]["held_out_fonts_top1"] <= 1
    assert {"false_annotation_share", "missed_label_share", "confusions"} <= set(premise["transfer"]["noise"])
    for run in runs:
        assert run["grid"] and run["val"] == max(g["val"] for g in run["grid"])
        if run["stage"] == "reference":
            continue
        assert os.path.isfile(out / run["model_dir"] / "model.keras")
        metrics = json.loads((out / run["model_dir"] / "eval_test" / "metrics.json").read_text())
        if run["variant"] == "source":
            assert metrics["num_images"] == 152
            continue
        assert metrics["num_images"] == 100 and metrics["mAP"] == run["mAP"]
        history = json.loads((out / run["model_dir"] / "eval_history.json").read_text())
        metric = "mAP" if run["variant"] == "multi_label" else "top1"
        assert run["best_step"] == max(history, key=lambda e: (e[metric], -e["step"]))["step"]
    assert {len(r["grid"]) for r in runs if r["stage"] == "heads"} == {len(budgets.QUICK.heads.learning_rates)}
    md = (out / "results.md").read_text()
    for benchmark in ("scratch", "transfer"):
        for heading in (
            f"Table 2, {benchmark} benchmark: multi-label",
            f"Veit et al. 2017, Table 2, {benchmark} benchmark",
            f"Table 5, {benchmark} benchmark",
        ):
            assert heading in md
        assert "## Hu et al. 2019, Table 4" not in md  # the quick run is multi-label: Hu Table 2 on both benchmarks
        transfer = [r for r in runs if r["benchmark"] == "transfer" and r["variant"] != "source"]
        assert {r["row"] for r in transfer} == {r["row"] for r in runs if r["benchmark"] == "scratch"}
        mine = [r for r in runs if r["benchmark"] == benchmark and r["variant"] != "source"]
        expected_claims = {c["claim"] for c in claims.claims(Results(mine), 0.1)}
        assert {c["claim"] for c in results["checks"][benchmark]} == expected_claims
        # One seed: directions only, never a verdict.
        assert {c["verdict"] for c in results["checks"][benchmark]} <= {"direction at one seed", "not measured"}
    assert md.index("## The premise, measured first") < md.index("## Hu et al. 2019, Table 2, scratch")
    assert (
        md.index("Table 2, scratch benchmark")
        < md.index("Table 2, transfer benchmark")
        < md.index("## Veit et al. 2017, Table 2, scratch")
    )
    assert "nlr-reproduce --output_dir=" in md and "gap closed" in md and "## Claims" in md and "## Protocol" in md
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Proposed (sigmoid)" in proc.stdout and "[  1/" in proc.stdout
    # Every run records its own time, and results.md sums them (a resumed plan's wall time alone says little).
    assert len(results["run_seconds"]) == len(expected) and all(s > 0 for s in results["run_seconds"])
    assert all(r["seconds"] > 0 for r in runs)
    assert f"the {len(expected)} runs took" in md and "not counted" not in md

    # Started again, it reuses every finished run and writes the same tables; compared with itself, rows agree.
    proc = run_cli("reproduce", f"--output_dir={out}", *TINY, f"--compare_to={out / 'results.json'}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("reused") == len(expected)
    again = json.loads((out / "results.json").read_text())
    assert again["aggregate"] == results["aggregate"] and again["run_seconds"] == results["run_seconds"]
    assert set(again["rank_agreement"]) == {"scratch", "transfer"}
    agreement = [v for tables_ in again["rank_agreement"].values() for v in tables_.values()]
    assert all(v is None or v == pytest.approx(1.0) for v in agreement) and any(v is not None for v in agreement)

    # Another machine (another output folder) with the ledger goes on from the same plan: every chunk restored.
    elsewhere = tmp_path / "elsewhere"
    proc = run_cli("reproduce", f"--output_dir={elsewhere}", *TINY, f"--ledger={book}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("reused") == len(expected) and "training it again" not in proc.stdout
    moved = json.loads((elsewhere / "results.json").read_text())
    assert moved["aggregate"] == results["aggregate"] and moved["fingerprint"] == results["fingerprint"]

    # Other settings in the same folder: a clear error, not a mixed table.
    proc = run_cli("reproduce", f"--output_dir={out}", "--quick", "--num_train=400", timeout=300)
    assert proc.returncode == 1 and "nlr-reproduce: error:" in proc.stderr and "other settings" in proc.stderr
    assert json.loads((out / "results.json").read_text())["aggregate"] == again["aggregate"]


def test_bad_flags(tmp_path):
    proc = run_cli("reproduce", "--variants=three_label")
    assert proc.returncode == 1 and "--variants takes multi_label and/or single_label" in proc.stderr
    proc = run_cli("reproduce", "--seeds=a")
    assert proc.returncode == 1 and "--seeds takes non-negative integers" in proc.stderr
    proc = run_cli("reproduce", "--seeds=1,2", f"--output_dir={tmp_path / 'out'}")
    assert proc.returncode == 1 and "--seeds=1,2 leaves out seed 0" in proc.stderr and "--seeds=0,1,2" in proc.stderr
    assert not (tmp_path / "out").exists()
