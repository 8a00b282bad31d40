"""nlr-reproduce: a tiny reproduction end to end, and the tables' arithmetic."""

import json
import os

import pytest
from cli_util import run_cli

from nlr_tf.reproduce import plan, tables

TINY = ("--quick", "--step_scale=0.02", "--num_train=300", "--num_val=50", "--num_test=100")


def _record(variant, row, fraction, seed, m, top1=0.0, label=None):
    return {
        "variant": variant,
        "row": row,
        "label": label or row,
        "fraction": fraction,
        "seed": seed,
        "mAP": m,
        "APall": m / 2,
        "top1": top1,
        "eval_history": [],
    }


def test_gap_closed_means_over_seeds_and_checks():
    ml = "multi_label"
    records = [
        _record(ml, "noisy", None, 0, 0.60),
        _record(ml, "noisy", None, 1, 0.62),
        _record(ml, "gt", None, 0, 0.80),
        _record(ml, "gt", None, 1, 0.82),
        _record(ml, "nr_sigmoid", 0.05, 0, 0.70),
        _record(ml, "nr_sigmoid", 0.05, 1, 0.74),
        _record(ml, "ft_mixed", 0.05, 0, 0.65),
        _record(ml, "ft_mixed", 0.05, 1, 0.65),
        _record(ml, "lc_joint", 0.05, 0, 0.64),
        _record(ml, "lc_joint", 0.05, 1, 0.64),
    ]
    res = tables.Results(records)
    assert res.mean(ml, "noisy", 0.05, "mAP") == pytest.approx(0.61)  # shared rows count at every fraction
    assert res.std(ml, "nr_sigmoid", 0.05, "mAP") == pytest.approx(0.02)
    assert res.gap_closed(ml, "nr_sigmoid", 0.05, "mAP") == pytest.approx((0.72 - 0.61) / (0.81 - 0.61))
    assert res.cell(ml, "nr_sigmoid", 0.05, "mAP") == "72.00 ± 2.00"
    held = {c["claim"]: c["held"] for c in tables.checks(res)}
    assert held["nr_sigmoid at or above every baseline in mAP at every clean fraction"] is True
    assert held["lc_joint at or above ft_mixed in mAP"] is False
    assert held["the best method closes at least half of the noisy-to-clean gap at 5 % clean"] is True
    # No gap when the upper bound is not above the baseline: the share is undefined, not a large number.
    flipped = [dict(r, mAP=0.5) if r["row"] == "gt" else r for r in records]
    assert tables.Results(flipped).gap_closed(ml, "nr_sigmoid", 0.05, "mAP") is None


def test_plan_covers_every_row_and_shares_the_noisy_model():
    runs = plan.make_plan(plan.FULL)
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    ml = [r for r in runs if r.variant == "multi_label" and r.seed == 0]
    assert {r.row.key for r in ml if r.fraction == 0.05} == {r.key for r in plan.MULTI_LABEL_ROWS}
    assert {r.row.key for r in ml if r.fraction == 0.10} >= {"h_only", "g_only"}
    assert all(names.index(r.init) < names.index(r.name) for r in runs if r.init)
    assert {r.clean_split for r in ml if r.row.key == "gt"} == {"clean_all"}
    assert {r.clean_split for r in ml if r.fraction == 0.20} == {"clean_20"}
    assert len({r.seed for r in runs}) == 3


def test_tiny_reproduction_through_the_cli(tmp_path):
    out = tmp_path / "repro"
    proc = run_cli("reproduce", f"--output_dir={out}", *TINY, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    expected = plan.make_plan(plan.QUICK.scaled(0.02))
    assert len(runs) == len(expected)
    for run in runs:
        assert 0.0 <= run["mAP"] <= 1.0 and 0.0 <= run["APall"] <= 1.0
        assert os.path.isfile(out / run["model_dir"] / "model.keras")
        metrics = json.loads((out / run["model_dir"] / "eval_test" / "metrics.json").read_text())
        assert metrics["num_images"] == 100 and metrics["mAP"] == run["mAP"]
    assert any(run["eval_history"] for run in runs if run["row"] == "nr_tanh")
    md = (out / "results.md").read_text()
    for heading in ("Table 2: multi-label", "Veit et al. 2017, Table 2", "Table 4: single-label", "Table 5"):
        assert heading in md
    assert "nlr-reproduce --output_dir=" in md and "gap closed" in md and "## Expected outcomes" in md
    assert len(results["checks"]) == 8
    for plot in ("map_vs_clean_fraction.png", "training_curves.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Proposed (sigmoid)" in proc.stdout and "[  1/" in proc.stdout

    # Started again, it reuses every finished run and writes the same tables.
    proc = run_cli("reproduce", f"--output_dir={out}", *TINY, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("reused") == len(expected)
    assert json.loads((out / "results.json").read_text())["aggregate"] == results["aggregate"]

    # Other settings in the same folder: a clear error, not a mixed table.
    proc = run_cli("reproduce", f"--output_dir={out}", "--quick", "--num_train=400", timeout=300)
    assert proc.returncode == 1 and "nlr-reproduce: error:" in proc.stderr and "other settings" in proc.stderr
    assert json.loads((out / "results.json").read_text())["aggregate"] == results["aggregate"]


def test_bad_flags():
    proc = run_cli("reproduce", "--variants=three_label")
    assert proc.returncode == 1 and "--variants takes multi_label and/or single_label" in proc.stderr
    proc = run_cli("reproduce", "--seeds=a")
    assert proc.returncode == 1 and "--seeds takes non-negative integers" in proc.stderr
