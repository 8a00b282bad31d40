"""nlr-compare's results: the reproduction's protocol on a user's dataset, read as a recommendation.

The plan, the runs and the statistics are the reproduction's own (`plan`,
`runner`, `results`, `statistics`, `recommendation`): the dataset is the
plan's `USER_DATA` benchmark, its clean-label budgets the plan's clean
fractions. This module writes what a user reads: the table per budget, the
regime map, the recommendation, and the commands that train the recommended
method on all the data, export it and write its cleaned labels.
"""

import dataclasses
import json
import os
from typing import Any, Optional

from nlr_tf.data.clean_budgets import describe
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.evaluation.evaluator import read_scores
from nlr_tf.reproduce import plots, recommendation
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.datasets import dataset_dir
from nlr_tf.reproduce.dry_run import duration
from nlr_tf.reproduce.flagfiles import format_value
from nlr_tf.reproduce.plan import Run, user_rows
from nlr_tf.reproduce.report import RESULTS_JSON, RESULTS_MD, atomic_write, finite_json, time_line
from nlr_tf.reproduce.results import AT_CAP, MAIN_METRIC, Results
from nlr_tf.reproduce.rows import NOISY, USER_DATA
from nlr_tf.reproduce.run_configs import train_config
from nlr_tf.reproduce.statistics import BOOTSTRAP_DRAWS, BOOTSTRAP_LEVEL, bootstrap_interval
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.config import TrainConfig

REGIME_PLOT = "regime_map.png"
FINAL_DIR = "final"  # OUTPUT_DIR/final: where the recommended commands train, export and clean


def _budget_words(fraction: float) -> str:
    return f"{100 * fraction:g} % of the clean set"


def _flags(config: TrainConfig, row) -> list[str]:
    """The flags that differ from nlr-train's defaults, and the row's own settings and rates, default or not."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    values = dataclasses.asdict(config)
    stated = {"method", *row.config(), *(field for field, _ in row.lr_fields)}
    return [f"--{k}={format_value(v)}" for k, v in values.items() if v != defaults.get(k) or k in stated]


def final_commands(output_dir: str, budget: Budget, row_key: str, fraction: float, learning_rate: float) -> str:
    """The shell commands that train `row_key` on every clean label with its chosen rate, export it and write
    its cleaned labels (and suspected label errors) into OUTPUT_DIR/final."""
    rows = {r.key: r for r in user_rows(budget.user.variant)}
    row = rows[row_key]
    final = os.path.join(output_dir, FINAL_DIR)
    data = dataset_dir(output_dir, budget.user.variant, USER_DATA)
    commands = []
    chain = [row]
    while chain[0].starts_from or (chain[0].stage not in ("scratch",) and chain[0].key != NOISY.key):
        chain.insert(0, rows[chain[0].starts_from or NOISY.key])
    previous = ""
    for r in chain:
        run = Run(budget.user.variant, 0, None if r.shared else fraction, r, learning_rate, USER_DATA)
        if r.key != row_key:  # a starting point: the rate the plan gives it (a one-rate stage, or the grid's first)
            run = dataclasses.replace(run, learning_rate=budget.stage(r.stage).learning_rates[0])
        config = train_config(run, output_dir, budget, previous)
        config.model_dir = os.path.join(final, r.key)
        config.dataset = data
        config.feature_cache = ""  # heads train on the images, their backbone frozen: the model keeps its backbone
        config.clean_split = "clean"  # every clean label
        if previous and config.init_checkpoint:
            config.init_checkpoint = previous
        commands.append(" \\\n    ".join(["nlr-train", *_flags(config, r)]))
        previous = config.model_dir
    model = os.path.join(final, row_key)
    export = ["nlr-export", f"--model_dir={model}", f"--export_dir={os.path.join(final, 'export', '1')}"]
    if budget.user.variant == "multi_label":
        export.append("--thresholds")
    commands.append(" ".join(export))
    commands.append(
        f"nlr-clean-labels --model_dir={model} --dataset={data} --output_dir={os.path.join(final, 'cleaned')}"
    )
    return "\n".join(commands)


def _chosen(records: list[dict[str, Any]], row: str, fraction: float) -> Optional[dict[str, Any]]:
    """The grid seed's record of a row at a budget (its chosen rate; the other seeds reuse it)."""
    first = min(r["seed"] for r in records)
    mine = [r for r in records if r["row"] == row and r["fraction"] in (fraction, None) and r["seed"] == first]
    return mine[0] if mine else None


def test_intervals(output_dir: str, records: list[dict[str, Any]], res: Results, variant: str) -> list[dict[str, Any]]:
    """Each cell's bootstrap interval over the test images (`statistics.bootstrap_interval`), from the scores its
    runs kept; a cell with a run that kept none (finished before runs kept their scores) has none."""
    metric = MAIN_METRIC[variant]
    scores: dict[tuple[str, float], list] = {}
    for r in records:
        kept = read_scores(run_files.scores_path(os.path.join(output_dir, r["model_dir"]), "test"))
        for fraction in [r["fraction"]] if r["fraction"] is not None else res.fractions[variant]:
            scores.setdefault((r["row"], fraction), []).append(kept)
    out = []
    for (row, fraction), kept in scores.items():
        interval = None if any(k is None for k in kept) else bootstrap_interval(kept, metric)
        if interval is not None:
            out.append({"row": row, "fraction": fraction, "low": interval[0], "high": interval[1]})
    return out


def _intervals_table(res: Results, intervals: list[dict[str, Any]], variant: str, test_images: int) -> str:
    fractions = res.fractions[variant]
    found = {(i["row"], i["fraction"]): i for i in intervals}
    lines = [
        f"A {100 * BOOTSTRAP_LEVEL:g} % interval of each cell's mean {MAIN_METRIC[variant]}: the {test_images:,} test "
        f"images drawn with replacement {BOOTSTRAP_DRAWS} times, every seed's run scored on the same draw. It is "
        "the precision the test set's size allows; the ± of the table is the spread over seeds.",
        "",
        "| Row | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " |",
        "|" + "---|" * (len(fractions) + 1),
    ]
    order = {r.key: i for i, r in enumerate(user_rows(variant))}
    rows = sorted({row for (v, row) in res.labels if v == variant}, key=lambda r: order.get(r, len(order)))
    def interval(row, f) -> str:
        return f"{100 * found[(row, f)]['low']:.2f} – {100 * found[(row, f)]['high']:.2f}" if (row, f) in found else "–"

    for row in rows:
        cells = [interval(row, f) for f in fractions]
        lines.append(f"| {res.labels[(variant, row)]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table(res: Results, records, variant: str) -> str:
    metric = MAIN_METRIC[variant]
    fractions = res.fractions[variant]
    has_gt = res.has(variant, "gt")
    header = ["Row"] + [f"{metric} at {100 * f:g} %" + (" (gap closed)" if has_gt else "") for f in fractions]
    header += ["chosen rate / best step (first seed, largest budget)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = [row for (v, row) in sorted(res.labels) if v == variant]
    order = {r.key: i for i, r in enumerate(user_rows(variant))}
    for row in sorted(rows, key=lambda r: order.get(r, len(order))):
        cells = []
        for f in fractions:
            text = res.cell(variant, row, f, metric)
            if has_gt and text != "–":
                text += f" ({res.gap_cell(variant, row, f, metric)})"
            cells.append(text)
        chosen = _chosen(records, row, fractions[-1])
        how = "–"
        if chosen is not None:
            rate = "C " + format_value(chosen["C"]) if "C" in chosen else f"lr {format_value(chosen['learning_rate'])}"
            step = chosen.get("best_step")
            at_cap = step is not None and chosen.get("max_steps") and step >= chosen["max_steps"]
            how = rate + ("" if step is None else f" / step {step}") + (f" {AT_CAP}" if at_cap else "")
        lines.append(f"| {res.labels[(variant, row)]} | " + " | ".join(cells) + f" | {how} |")
    return "\n".join(lines)


def write_compare_results(
    output_dir: str,
    records: list[dict[str, Any]],
    budget: Budget,
    *,
    command: str,
    elapsed: float,
    run_seconds,
    run_cpu_seconds,
    data_report: dict[str, Any],
    cap_lines: list[str],
    code_version: Optional[dict[str, Any]] = None,
    estimate: Optional[dict[str, Any]] = None,
) -> str:
    """Writes results.md, results.json and regime_map.png; returns the table and the recommendation as markdown."""
    variant = budget.user.variant
    res = Results(records)
    rec = recommendation.recommend(res, variant)
    rec_text = recommendation.recommendation_markdown(rec, _budget_words)
    figures = []
    if len(res.fractions[variant]) > 1:
        images = {b["fraction"]: b["records"] for b in data_report.get("budgets", [])}
        leaders = [b["leader"] for b in reversed(rec["budgets"])]  # the largest budget's leader first
        plots.plot_regime_map(res, os.path.join(output_dir, REGIME_PLOT), images or None, leaders)
        figures.append(f"![metric against the clean-label budget]({REGIME_PLOT})")
    seeds = sorted({r["seed"] for r in records})
    data_lines = [f"- Dataset: `{budget.user.path}` ({variant.replace('_', '-')})."]
    data_lines += [f"- {line}." for line in describe(data_report)]
    data_lines.append("- Step caps, scaled to this dataset: " + "; ".join(cap_lines) + ".")
    final = None
    if rec["budgets"]:
        top = rec["budgets"][-1]
        chosen = _chosen(records, top["leader"], top["fraction"])
        if chosen is not None and chosen.get("learning_rate") is not None:
            final = final_commands(output_dir, budget, top["leader"], top["fraction"], chosen["learning_rate"])
    table = _table(res, records, variant)
    intervals = test_intervals(output_dir, records, res, variant)
    test_images = load_dataset_info(dataset_dir(output_dir, variant, USER_DATA)).splits["test"].num_records
    metric = MAIN_METRIC[variant]
    md = "\n\n".join(
        [
            f"# nlr-compare: {os.path.basename(os.path.normpath(budget.user.path))}",
            f"Generated by:\n\n```\n{command}\n```",
            time_line(elapsed, run_seconds, run_cpu_seconds)
            + (
                f" `--dry_run` had estimated between {duration(estimate['lower'])} and {duration(estimate['upper'])} "
                f"of wall time for these {estimate['runs']} runs and {estimate['feature_caches']} feature cache(s)."
                if estimate
                else ""
            ),
            "## Data\n\n" + "\n".join(data_lines),
            f"## Test {metric} per clean-label budget (%)\n\n"
            f"Seeds {', '.join(map(str, seeds))}; mean"
            + (" ± sample standard deviation over seeds" if len(seeds) > 1 else " (one seed: no spread)")
            + f"; {AT_CAP}: best validation at the step cap in some seed. Every row trains under the protocol of "
            "nlr-reproduce (one step cap, evaluation interval, patience and learning-rate grid per stage; rates "
            "chosen on val; the test metrics of the best-val weights).\n\n" + table,
            *(
                ["## Precision of the test metrics\n\n" + _intervals_table(res, intervals, variant, test_images)]
                if intervals
                else []
            ),
            "## Which method, and how many clean labels\n\n" + rec_text,
            *(
                [
                    "## Train it on all the data, export it, clean the labels\n\n"
                    f"```bash\n{final}\n```"
                ]
                if final
                else []
            ),
            *(["## Regime map\n\n" + "\n\n".join(figures)] if figures else []),
        ]
    )
    atomic_write(os.path.join(output_dir, RESULTS_MD), md + "\n")
    out = {
        "command": command,
        "code_version": code_version,
        "budget": dataclasses.asdict(budget),
        "data": data_report,
        "step_caps": cap_lines,
        "elapsed_seconds": elapsed,
        "run_seconds": run_seconds,
        "run_cpu_seconds": run_cpu_seconds,
        "dry_run_estimate": estimate,
        "aggregate": res.as_dict(),
        "recommendation": rec,
        "test_intervals": intervals,
        "final_commands": final,
        "runs": records,
    }
    atomic_write(os.path.join(output_dir, RESULTS_JSON), json.dumps(finite_json(out), indent=1, allow_nan=False))
    return table + "\n\n" + rec_text + (f"\n\n{final}" if final else "")
