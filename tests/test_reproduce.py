"""nlr-reproduce: a tiny reproduction end to end, and the tables' arithmetic."""

import json
import os

import pytest
from cli_util import run_cli

from nlr_tf.reproduce import plan, tables

TINY = ("--quick", "--step_scale=0.02", "--num_train=300", "--num_val=50", "--num_test=100")


def _record(variant, row, fraction, seed, m, top1=0.0, label=None):
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
    res = tables.Results(records)
    assert res.mean(ml, "noisy", 0.05, "mAP") == pytest.approx(0.61)  # shared rows count at every fraction
    assert res.std(ml, "nr_sigmoid", 0.05, "mAP") == pytest.approx(0.02)
    assert res.gap_closed(ml, "nr_sigmoid", 0.05, "mAP") == pytest.approx((0.72 - 0.61) / (0.81 - 0.61))
    assert res.cell(ml, "nr_sigmoid", 0.05, "mAP") == "72.00 ± 2.00"
    # Seed-paired differences: nr − ft_last is +0.05 and +0.04; SE = std(ddof=1) / sqrt(2) = 0.005.
    d = res.difference(ml, "nr_sigmoid", "ft_last", 0.05, "mAP")
    assert d["mean"] == pytest.approx(0.045) and d["se"] == pytest.approx(0.005) and d["significant"] is True
    d = res.difference(ml, "nr_sigmoid", "ft_mixed", 0.05, "mAP")  # +0.05, +0.09: SE 0.02, mean 0.07 > 0.04
    assert d["significant"] is True
    claims = {c["claim"]: c for c in tables.claims(res, 0.05)}
    nr = claims["Hu T2: nr_sigmoid above FT-L, FT-M, Veit WP and TJ in mAP at every clean fraction"]
    assert nr["held"] is True and nr["beyond_2se"] is True and "ft_last: 5 %: +4.50 (SE 0.50" in nr["detail"]
    assert claims["Hu T2: nr_tanh above FT-L, FT-M, Veit WP and TJ in mAP at every clean fraction"]["held"] is None
    # ft_last is 2.5 points below the clean-set logistic regression: the protocol check fails.
    assert claims["protocol: ft_last within 0.5 mAP of (or above) the clean-set logistic regression"]["held"] is False
    # No gap when the upper bound is not above the baseline: the share is undefined, not a large number.
    flipped = [dict(r, mAP=0.5) if r["row"] == "gt" else r for r in records]
    assert tables.Results(flipped).gap_closed(ml, "nr_sigmoid", 0.05, "mAP") is None


def test_regime_findings_name_the_leader_per_fraction_and_where_whole_network_fine_tuning_overtakes():
    ml = "multi_label"
    values = {  # fraction -> row -> mAP
        0.01: {"nr_sigmoid": 0.70, "ft_last": 0.66, "ft_whole": 0.68},
        0.10: {"nr_sigmoid": 0.72, "ft_last": 0.74, "ft_whole": 0.80},
    }
    records = [_record(ml, r, f, s, v) for f, rows in values.items() for r, v in rows.items() for s in (0, 1)]
    records += [_record(ml, "noisy", None, s, 0.6) for s in (0, 1)] + [_record(ml, "gt", None, s, 0.9) for s in (0, 1)]
    text = tables.regime_findings(tables.Results(records), ml)
    assert "1 %: nr_sigmoid (70.00); 10 %: ft_last (74.00)." in text
    assert "Noisy-FT-W is above the best of them at 10 %: -2.00 points at 1 %, +6.00 points at 10 %." in text


def test_premise_table_pairs_each_rotation_pretrained_row_with_its_counterpart():
    ml = "multi_label"
    records = []
    for seed, (base, rotated) in enumerate(((0.60, 0.66), (0.62, 0.67))):
        records += [_record(ml, "noisy", None, seed, base), _record(ml, "rot_noisy", None, seed, rotated)]
        records += [_record(ml, "ft_last", 0.1, seed, base + 0.05), _record(ml, "rot_ft_last", 0.1, seed, base)]
    res = tables.Results(records)
    lines = tables.premise_table(res, 0.1).splitlines()
    assert len(lines) == 4  # header, rule, noisy, ft_last: rows not run are left out
    assert "61.00 ± 1.00" in lines[2] and "66.50 ± 0.50" in lines[2] and "+5.50 (SE 0.50, beyond 2 SE)" in lines[2]
    assert "-5.00 (SE 0.00" in lines[3]
    # The regime map leaves the investigation's rows out.
    assert "rot_noisy" not in tables.regime_table(res, ml)


def test_rank_agreement_between_two_reproductions():
    ml = "multi_label"
    order = ["noisy", "ft_whole", "ft_last", "ft_mixed", "lc_pretrained", "lc_joint", "nr_sigmoid", "nr_tanh"]
    order += ["nr_relu", "gt"]
    a = [_record(ml, row, None if row in ("noisy", "gt") else 0.1, 0, 0.5 + 0.01 * i) for i, row in enumerate(order)]
    same = tables.rank_agreement(tables.Results(a), tables.Results(a))
    assert same["hu_table2"] == pytest.approx(1.0) and same["hu_table4"] is None
    reversed_ = [dict(r, mAP=1.0 - r["mAP"]) for r in a]
    assert tables.rank_agreement(tables.Results(a), tables.Results(reversed_))["hu_table2"] == pytest.approx(-1.0)


def test_plan_covers_every_row_under_one_protocol():
    runs = plan.make_plan(plan.FULL)
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    ml = [r for r in runs if r.variant == "multi_label" and r.seed == 0]
    for fraction in plan.FULL.fractions:
        expected = {r.key for r in plan.MULTI_LABEL_ROWS + plan.MULTI_LABEL_REFERENCES if not r.shared}
        assert {r.row.key for r in ml if r.fraction == fraction} >= expected
    assert {r.row.key for r in ml if r.fraction == 0.10} >= {"h_only", "g_only", "nr_sigmoid_whole"}
    cells = [r.cell for r in runs]
    assert all(cells.index(r.init) < cells.index(r.cell) for r in runs if r.init)
    assert {r.clean_split for r in ml if r.row.key == "gt"} == {"clean_all"}
    assert {r.clean_split for r in ml if r.fraction == 0.20} == {"clean_20"}
    assert len({r.seed for r in runs}) == 3
    # The grid seed runs every rate of a stage's grid; the other seeds one run, its rate chosen later.
    grid = plan.FULL.heads.learning_rates
    assert len(grid) >= 3 and max(grid) / min(grid) >= 10
    ft_last = [r for r in runs if r.row.key == "ft_last" and r.fraction == 0.05 and r.variant == "multi_label"]
    assert sorted(r.learning_rate for r in ft_last if r.seed == 0) == sorted(grid)
    assert [r.learning_rate for r in ft_last if r.seed != 0] == [None, None]
    # Single-label rows train once from scratch, as the clean-only model does (Hu, Clothing1M).
    sl = {r.row.key: r for r in runs if r.variant == "single_label" and r.fraction == 0.10}
    assert {sl[k].row.stage for k in ("nr_sigmoid", "h_only", "g_only", "clean_only")} == {"scratch"}
    assert sl["nr_sigmoid"].init is None and sl["nr_sigmoid_from_noisy"].init.endswith("shared/noisy")
    assert {r.fraction for r in runs if r.variant == "single_label" and r.seed == 0} >= {0.02, 0.05, 0.10}
    # The rows from other works: Veit Table 2's Misra rows and the anchor-T Forward row read no clean label and
    # train once per seed; Forward (paired T), CleanNet and confident learning at every fraction; Hu Table 4's
    # at the main fraction, each with its fine-tuning row starting from that fraction's run.
    shared = {r.row.key for r in ml if r.fraction is None}
    assert {"misra_visual", "misra_relevance", "forward_anchor"} <= shared
    for fraction in plan.FULL.fractions:
        assert {"forward", "confident_learning"} <= {r.row.key for r in ml if r.fraction == fraction}
    assert sl["forward"].row.stage == "scratch" and sl["forward"].init is None
    assert sl["forward_ft"].init == sl["forward"].cell and sl["forward_ft"].row.method == "ft_whole"
    assert sl["forward_anchor"].init == sl["forward"].noisy_cell
    # The premise investigation comes after every other run, on every seed, at the main fraction.
    premise = [i for i, r in enumerate(runs) if r.row in plan.PREMISE_ROWS]
    assert premise == list(range(len(runs) - len(premise), len(runs)))
    assert {runs[i].fraction for i in premise} == {None, plan.FULL.main_fraction}
    assert {runs[i].seed for i in premise} == {0, 1, 2}
    assert not any(r.row in plan.PREMISE_ROWS for r in plan.make_plan(plan.QUICK))


def test_every_row_trains_under_its_stage_rules(tmp_path):
    from nlr_tf.reproduce.runner import pretext_config, train_config

    for run in plan.make_plan(plan.FULL):
        if run.row.stage == "reference" or run.learning_rate is None:
            continue
        stage = plan.FULL.stage(run.row.stage)
        if run.row.stage == "pretext":
            config = pretext_config(run, str(tmp_path), plan.FULL)
            assert (config.split, config.steps, config.batch_size) == ("noisy", stage.max_steps, stage.batch_size)
            continue
        config = train_config(run, str(tmp_path), plan.FULL, "init_dir" if run.init else "")
        # The premise investigation's noisy backbone starts from the rotation-pretrained weights, the rest of
        # its rows from that backbone, exactly as their counterparts start from the randomly initialized one.
        if run.row.key == "rot_noisy":
            assert config.backbone_weights == "init_dir/backbone.weights.h5" and not config.init_checkpoint
            assert run.init.endswith("shared/rotation")
        elif run.row.key.startswith("rot_"):
            assert run.init.endswith("shared/rot_noisy") and config.init_checkpoint == "init_dir"
        else:
            assert config.backbone_weights == "none"
        pretrain = plan.FULL.cleaning_pretrain_steps if dict(run.row.settings).get("pretrain") else 0
        assert config.train_steps - pretrain == stage.max_steps and config.cleaning_pretrain_steps == pretrain
        assert (config.eval_split, config.eval_steps) == ("val", stage.eval_steps)
        assert config.early_stopping_patience == stage.patience and config.restore_best
        assert config.batch_size == stage.batch_size
        assert config.learning_rate in {f * run.learning_rate for f in (1.0, 10.0)}
        assert config.feature_cache.endswith("features") == (run.row.stage == "heads")


def test_tiny_reproduction_through_the_cli(tmp_path):
    out = tmp_path / "repro"
    proc = run_cli("reproduce", f"--output_dir={out}", *TINY, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    expected = plan.make_plan(plan.QUICK.scaled(0.02))
    assert len(runs) == len({r.cell for r in expected})
    for run in runs:
        assert run["grid"] and run["val"] == max(g["val"] for g in run["grid"])
        if run["stage"] == "reference":
            continue
        assert os.path.isfile(out / run["model_dir"] / "model.keras")
        metrics = json.loads((out / run["model_dir"] / "eval_test" / "metrics.json").read_text())
        assert metrics["num_images"] == 100 and metrics["mAP"] == run["mAP"]
        history = json.loads((out / run["model_dir"] / "eval_history.json").read_text())
        metric = "mAP" if run["variant"] == "multi_label" else "top1"
        assert run["best_step"] == max(history, key=lambda e: (e[metric], -e["step"]))["step"]
    assert {len(r["grid"]) for r in runs if r["stage"] == "heads"} == {len(plan.QUICK.heads.learning_rates)}
    md = (out / "results.md").read_text()
    for heading in (
        "Table 2: multi-label",
        "Veit et al. 2017, Table 2",
        "Table 4: single-label",
        "Table 5",
        "Protocol",
    ):
        assert heading in md
    assert "nlr-reproduce --output_dir=" in md and "gap closed" in md and "## Claims" in md
    assert {c["claim"] for c in results["checks"]} == {c["claim"] for c in tables.claims(tables.Results(runs), 0.1)}
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
    assert all(v is None or v == pytest.approx(1.0) for v in again["rank_agreement"].values())

    # Other settings in the same folder: a clear error, not a mixed table.
    proc = run_cli("reproduce", f"--output_dir={out}", "--quick", "--num_train=400", timeout=300)
    assert proc.returncode == 1 and "nlr-reproduce: error:" in proc.stderr and "other settings" in proc.stderr
    assert json.loads((out / "results.json").read_text())["aggregate"] == again["aggregate"]


def test_bad_flags():
    proc = run_cli("reproduce", "--variants=three_label")
    assert proc.returncode == 1 and "--variants takes multi_label and/or single_label" in proc.stderr
    proc = run_cli("reproduce", "--seeds=a")
    assert proc.returncode == 1 and "--seeds takes non-negative integers" in proc.stderr
