"""results.json, results.md and the plots of a reproduction."""

import dataclasses
import json
import math
import os
from typing import Any, Optional

from nlr_tf.reproduce import plan, tables
from nlr_tf.reproduce.plan import Budget

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
REGIME_PLOT, CURVES_PLOT = "regime_map.png", "training_curves.png"


def _atomic_write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def starting_points(budget: Budget) -> dict[tuple[str, Optional[str]], dict[str, list[str]]]:
    """Where the rows of the tables start, read off the plan (`plan.make_plan`).

    Returns:
        (stage, the label of the run a row starts from, None for random
        weights) -> variant -> the labels of the rows that start there. The
        premise investigation's rows, the reference rows and the runs that
        start nothing of their own (pretext, source) are left out.
    """
    runs = plan.make_plan(budget)
    cell_labels = {run.cell: run.row.label for run in runs}
    premise = {row.key for row in plan.PREMISE_ROWS}
    out: dict[tuple[str, Optional[str]], dict[str, list[str]]] = {}
    for run in runs:
        if run.row.key in premise or run.row.stage in ("reference", "pretext", "source"):
            continue
        start = cell_labels.get(run.init, run.init) if run.init else None
        labels = out.setdefault((run.row.stage, start), {}).setdefault(run.variant, [])
        if run.row.label not in labels:
            labels.append(run.row.label)
    return out


def _rows_text(by_variant: dict[str, list[str]]) -> str:
    """Row labels by variant, each label in italics (labels hold commas)."""
    return "; ".join(
        f"{variant.replace('_', '-')}: " + ", ".join(f"*{label}*" for label in labels)
        for variant, labels in by_variant.items()
    )


def protocol(budget: Budget) -> str:
    """The rules every row trained under, as a paragraph of results.md: every training step, where each row starts,
    and where a row's loss differs from the others'."""
    from nlr_tf.models import cleannet_model, confident_learning_model

    def stage(name: str, what: str) -> str:
        s = budget.stage(name)
        rates = ", ".join(f"{lr:g}" for lr in s.learning_rates)
        grid = (
            f"learning rate chosen on val from {{{rates}}}" if len(s.learning_rates) > 1 else f"learning rate {rates}"
        )
        return (
            f"- **{name}** ({what}): at most {s.max_steps} steps of batch {s.batch_size}, evaluated on val every "
            f"{s.eval_steps} steps, stopped after {s.patience} evaluations without a better val metric; {grid}."
        )

    starts = starting_points(budget)

    def rows(stage_name: str, start_text) -> str:
        groups = [(start, by_variant) for (s, start), by_variant in starts.items() if s == stage_name]
        return " ".join(f"{start_text(start)}: {_rows_text(by_variant)}." for start, by_variant in groups)

    stages_run = {s for s, _ in starts} | {run.row.stage for run in plan.make_plan(budget)}
    sizes = budget.dataset_sizes or (12000, 2000, 4000)
    lines = [
        "Every row trains under the rules of its stage, and reports the test metrics of its best-val weights "
        "(`nlr-train --eval_split=val --early_stopping_patience=N --restore_best`). Adam everywhere. Where a row "
        "starts is read off the plan (`nlr_tf/reproduce/plan.py`): from the run of the same seed (and clean "
        "fraction, where the row has one) that it names.",
        "",
        *(
            [stage("source", "the transfer benchmark's source classifier, from random weights, on exact labels")]
            if "source" in stages_run
            else []
        ),
        stage("scratch", "the whole network, from random weights or a pretrained backbone")
        + " "
        + rows("scratch", lambda start: "From random weights" if start is None else f"From {start}'s backbone"),
        stage(
            "whole",
            "the whole network from another run; a grid would cost too much, so one rate: the backbone's, ten "
            "times lower than a new head's",
        )
        + " "
        + rows("whole", lambda start: f"From {start}"),
        stage("heads", "heads on a frozen backbone's feature cache")
        + " "
        + rows("heads", lambda start: f"On {start}'s frozen backbone"),
        *(
            [
                f"- **pretext** (the premise investigation only): {budget.pretext.max_steps} steps of rotation "
                f"prediction, batch {budget.pretext.batch_size} (each image at four angles), learning rate "
                f"{budget.pretext.learning_rates[0]:g}, no evaluation; the investigation's noisy backbone starts "
                "from its weights, and the investigation's other rows from that backbone."
            ]
            if budget.premise
            else []
        ),
        "",
        "Training outside the stage budgets:",
        "",
        f"- Veit WP pretrains its cleaning net on the clean set alone for {budget.cleaning_pretrain_steps} steps "
        "(where its L1 loss has levelled off) before, and outside, the joint budget it shares with TJ. Its step "
        "cap, against which ‡ is judged, counts these steps as its best-val step does.",
    ]
    if budget.baselines:
        lines += [
            f"- CleanNet-wsoft first trains CleanNet itself for {budget.cleannet_steps} steps (SGD with momentum, "
            f"{cleannet_model.BATCH} verified and {cleannet_model.BATCH} unverified label pairs a step, on the "
            "cached features of the seed's noisy model; the weights with the best verification accuracy on val "
            f"kept), after choosing its reference set by k-means ({cleannet_model.NUM_REFERENCES} centres per "
            "class); only then does its classifier train, under its stage's budget.",
            f"- Confident learning first fits {confident_learning_model.FOLDS}-fold logistic regressions "
            "(scikit-learn, one per class on multi-label data) on the noisy set's cached features, for out-of-sample "
            "probabilities, and drops the examples cleanlab flags; then its classifier trains under the heads "
            "budget. The probabilities are out of sample for the logistic regressions only: the features come "
            "from the noisy backbone, trained on those same noisy labels (in-sample features).",
            "- Forward's T is estimated, not trained: counted from the clean set's paired labels, or (anchor T) "
            "read off the noisy model's predictions at anchor points.",
            "- The rows from other works train under the same rules: Misra et al.'s two classifiers and Forward "
            "with Patrini's anchor-point T read no clean label and train once per seed; Forward (T counted from the "
            "clean set's paired labels), CleanNet-wsoft (see `nlr_tf/models/cleannet_model.py` for the choices Lee et "
            "al. leave open) and confident learning use the fraction's clean set.",
        ]
    lines += [
        "- The logistic-regression rows are scikit-learn's `LogisticRegression` (lbfgs), one per class, on the "
        f"same cached features, with C chosen on val from {{{', '.join(f'{c:g}' for c in budget.reference_c)}}}: "
        "the convex reference for the head rows (Noisy-FT-L is the same model class).",
        "",
        "Losses and starting points that differ from the papers' or from the other rows':",
        "",
        "- On single-label data Forward (either T) trains softmax outputs with categorical cross-entropy (its "
        "noisy examples through T, as Patrini et al.), while every other single-label row, the rest of Hu Table 4 "
        "included, trains per-class sigmoid outputs with binary cross-entropy, as Hu's proposed model does: "
        "Forward's rows of Table 4 differ from their neighbours in loss as well as in method. On multi-label data "
        "every row's classifier trains with sigmoid binary cross-entropy (Forward's through T).",
        "- Both papers start from ImageNet weights (Hu's single-label rows from the clean-only model's starting "
        "point, or from the run they fine-tune): here the rows start where the lists above say, and random "
        "weights stand in for ImageNet on the scratch benchmark.",
        "",
        f"Learning rates are chosen on seed {budget.grid_seeds[0]}'s validation runs; the other seeds reuse each "
        "row's choice at that fraction. "
        f"Data: digits_mosaic, {sizes[0]} training images, {sizes[1]} val, {sizes[2]} test; the clean set of "
        "fraction f is built from f of the training digit scans only.",
    ]
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    """Hours and minutes, rounded once to the minute."""
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _time_line(elapsed: float, run_seconds: list[Optional[float]], run_cpu_seconds: list[Optional[float]]) -> str:
    """The time the tables cost: every run's wall and CPU seconds, summed (the learning-rate grids' other runs,
    the source and pretext runs included).

    A resumed plan reuses finished runs, so the last invocation's wall time
    alone says little; each run records its own wall and CPU seconds
    (`time.process_time`, every thread of the process) when it finishes.
    """
    wall = [s for s in run_seconds if s is not None]
    cpu = [s for s in run_cpu_seconds if s is not None]
    line = (
        f"Time on this machine (2 CPU cores): the {len(run_seconds)} runs took {_hours(sum(wall))} of wall time and "
        f"{_hours(sum(cpu))} of CPU time (every thread of the process) in all, each run's own time summed. This "
        f"invocation's wall time was {elapsed / 60:.1f} min."
    )
    if len(wall) < len(run_seconds):
        line += f" {len(run_seconds) - len(wall)} runs finished before run times were recorded and are not counted."
    if len(cpu) < len(run_cpu_seconds):
        line += f" {len(run_cpu_seconds) - len(cpu)} runs finished before CPU times were recorded and are not counted."
    return line


def _finite(value: Any) -> Any:
    """`value` with every non-finite float (an infinite t) replaced by None: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


CLAIMS_RULE = (
    "Each claim says a row is above another (a − b > 0) in cells, one per clean fraction. A cell is a paired "
    "t-test over the seeds both rows have (the runs of one seed share their noisy model and data): the mean "
    "difference in points, SE = the differences' sample standard deviation / √n, t = mean / SE with n − 1 "
    f"degrees of freedom, and its two-sided p. A cell is **held** when the difference is positive with p < "
    f"{tables.ALPHA:g}, **reversed** when it is negative with p < {tables.ALPHA:g}, **not shown** otherwise; one "
    "seed shows only a direction. When every seed's difference is the same non-zero number, SE is 0, t is "
    "infinite and p = 0 (null in results.json); when all are zero, the cell is not shown. A claim is held when "
    "every cell holds, reversed when any cell is reversed, not shown otherwise. Cells are tested one by one, "
    "without a correction for multiple comparisons: when two rows are equal, each cell still reads reversed "
    f"with probability {tables.ALPHA / 2:g}, so a claim of many cells can read reversed by chance. "
    f"{tables.AT_CAP} names a row of the cell that had its best validation at its step cap."
)


def _of_benchmark(records: list[dict[str, Any]], benchmark: str) -> list[dict[str, Any]]:
    """The table records of one benchmark (the source run is no row of the papers' tables)."""
    return [r for r in records if r.get("benchmark", "scratch") == benchmark and r["variant"] in (tables.ML, tables.SL)]


def _benchmark_sections(res: tables.Results, records, budget: Budget, benchmark: str) -> list[str]:
    """One benchmark's tables, regime maps and investigation, each heading naming the benchmark."""
    main = budget.main_fraction
    name = f"{benchmark} benchmark"
    sections = []
    if res.fractions[tables.ML]:
        sections += [
            f"## Hu et al. 2019, Table 2, {name}: multi-label classification (mAP, then APall, %; gap closed in "
            "parentheses)",
            tables.hu_table2(res),
            f"## Veit et al. 2017, Table 2, {name}: label cleaning against fine-tuning (APall, then MAP, %)",
            tables.veit_table2(res),
        ]
    if main in res.fractions[tables.SL]:
        sections += [
            f"## Hu et al. 2019, Table 4, {name}: single-label classification (top-1, %, {100 * main:g} % clean)",
            tables.hu_table4(res, main),
        ]
    sections += [
        f"## Hu et al. 2019, Table 5, {name}: training g and h (%, {100 * main:g} % clean)",
        tables.hu_table5(res, main),
    ]
    for variant in (tables.ML, tables.SL):
        if len(res.fractions[variant]) > 1:
            sections += [
                f"## Regime map, {name}, {variant.replace('_', '-')}: gap closed against the clean fraction",
                tables.regime_table(res, variant),
                tables.regime_findings(res, variant),
            ]
    if any(res.has(tables.ML, key) for key in tables.PREMISE_KEYS):
        accuracy = [r["pretext_rotation_accuracy"] for r in records if "pretext_rotation_accuracy" in r]
        sections += [
            f"## Investigation, {name}: rotation pretraining as the strong starting backbone "
            f"(multi-label mAP, %, {100 * main:g} % clean)",
            "Both papers start from ImageNet weights; on the scratch benchmark the backbone starts from random "
            "weights. In this investigation it first learns to predict the rotation of the training images (no "
            f"labels; {budget.pretext.max_steps} steps of {budget.pretext.batch_size} images at four angles; "
            f"rotation accuracy on training images {', '.join(f'{100 * a:.1f}' for a in accuracy)} %), then every "
            "row trains from it under the same protocol. Not a row of the papers' tables. The last column tests "
            "rotation-pretrained − random init seed by seed, as the claims below do.",
            tables.premise_table(res, main),
        ]
    return sections


PREMISE_FRACTION = 0.20  # Hu COCO's FT-L at 20 % closes 68 % of the noisy -> GT gap
PREMISE_CONFUSIONS = 4  # the annotator's most frequent confusions listed per benchmark (all: nlr-inspect)


def premise(output_dir: str, records: list[dict[str, Any]], results: dict[str, tables.Results]) -> dict[str, Any]:
    """What the papers take for granted, measured on each benchmark before the tables.

    - the source classifier's top-1 on its training fonts (val) and its
      held-out fonts (test);
    - the multi-label annotator's noise: the share of noisy annotations that
      are false and of true labels that are missed, on the training images,
      and its most frequent confusions;
    - the premise check: a logistic regression on the frozen noisy
      backbone's features fit on the 20 % clean set (the convex form of
      FT-L at 20 %), as the share of the noisy -> GT gap it closes, on val
      (what a choice may read) and on test (for the record);
    - with the transfer benchmark, the knob table that chose its settings.
    """
    from nlr_tf.data.label_stats import split_stats
    from nlr_tf.data.schema import load_dataset_info
    from nlr_tf.reproduce.runner import dataset_dir

    out: dict[str, Any] = {}
    source = [r for r in records if r["variant"] == "source"]
    if source:
        out["source"] = {"training_fonts_top1": source[0]["val"], "held_out_fonts_top1": source[0]["top1"]}
    for benchmark, res in results.items():
        entry: dict[str, Any] = {}
        path = dataset_dir(output_dir, tables.ML, benchmark)
        if res.fractions[tables.ML] and os.path.isfile(os.path.join(path, "dataset.json")):
            info = load_dataset_info(path)
            noise = info.provenance.get("noise_statistics", {}).get("noisy", {})
            entry["noise"] = {k: noise.get(k) for k in ("false_annotation_share", "missed_label_share")}
            entry["noise"]["confusions"] = split_stats(info, "noisy").confusions(info.class_names, PREMISE_CONFUSIONS)
        if PREMISE_FRACTION in res.fractions[tables.ML]:
            val = {
                row: {
                    r["seed"]: r["val"]
                    for r in records
                    if r["row"] == row
                    and r["variant"] == tables.ML
                    and r.get("benchmark", "scratch") == benchmark
                    and r["fraction"] in (None, PREMISE_FRACTION)
                }
                for row in ("noisy", "gt", "logreg_clean")
            }
            seeds = sorted(set(val["noisy"]) & set(val["gt"]) & set(val["logreg_clean"]))
            if seeds:
                mean = {row: sum(val[row][s] for s in seeds) / len(seeds) for row in val}
                gap = mean["gt"] - mean["noisy"]
                entry["premise_check"] = {
                    "fraction": PREMISE_FRACTION,
                    "seeds": seeds,
                    "val": {**mean, "gap_closed": (mean["logreg_clean"] - mean["noisy"]) / gap if gap > 0 else None},
                    "test": {
                        "noisy": res.mean(tables.ML, "noisy", PREMISE_FRACTION, "mAP"),
                        "gt": res.mean(tables.ML, "gt", PREMISE_FRACTION, "mAP"),
                        "logreg_clean": res.mean(tables.ML, "logreg_clean", PREMISE_FRACTION, "mAP"),
                        "gap_closed": res.gap_closed(tables.ML, "logreg_clean", PREMISE_FRACTION, "mAP"),
                    },
                }
        out[benchmark] = entry
    if "transfer" in results:
        out["knobs"] = load_knobs()
    return out


def premise_markdown(facts: dict[str, Any]) -> str:
    """The premise section of results.md."""
    lines = [
        "Both papers start from a backbone that already holds the target's classes (ImageNet), and a linear head "
        f"on the noisy model's frozen features fit on the clean set closes much of the noisy -> GT gap: in Hu "
        f"Table 2 (COCO), FT-L at 20 % closes 68 % of it (58.72 against noisy 45.30 and GT 65.16). The premise "
        "check measures the same on each benchmark, with its convex form: scikit-learn's logistic regression on "
        f"the frozen noisy backbone's cached features, fit on the {100 * PREMISE_FRACTION:g} % clean set (the "
        "`logreg_clean` row), as the share of the gap it closes. Val is what a choice of settings may read; test "
        "is for the record.",
        "",
    ]
    if "source" in facts:
        s = facts["source"]
        lines.append(
            f"- Source classifier (glyphs, the transfer benchmark's ImageNet): top-1 "
            f"{100 * s['training_fonts_top1']:.2f} % on other renderings of its training fonts, "
            f"{100 * s['held_out_fonts_top1']:.2f} % on held-out fonts."
        )
    for benchmark in plan.BENCHMARKS:
        entry = facts.get(benchmark)
        if not entry:
            continue
        parts = []
        if entry.get("noise"):
            n = entry["noise"]
            who = (
                "the source classifier's top-k on whole mosaics"
                if benchmark == "transfer"
                else "the weak per-digit annotator"
            )
            parts.append(
                f"noisy labels from {who}: {100 * n['false_annotation_share']:.1f} % of noisy annotations false, "
                f"{100 * n['missed_label_share']:.1f} % of true labels missed"
            )
            if n.get("confusions"):
                parts.append(
                    "most frequent confusions (true digit present -> false label, share of false labels) "
                    + ", ".join(f"{c['true']} -> {c['noisy']} {100 * c['share']:.1f} %" for c in n["confusions"])
                )
        check = entry.get("premise_check")
        if check:
            v, t = check["val"], check["test"]
            gap_v = "–" if v["gap_closed"] is None else f"{100 * v['gap_closed']:.0f} %"
            gap_t = "–" if t["gap_closed"] is None else f"{100 * t['gap_closed']:.0f} %"
            parts.append(
                f"premise check {gap_v} of the gap on val (logistic regression {100 * v['logreg_clean']:.2f}, noisy "
                f"{100 * v['noisy']:.2f}, GT {100 * v['gt']:.2f} mAP), {gap_t} on test"
            )
        lines.append(f"- **{benchmark}**: " + "; ".join(parts) + ".")
    if "knobs" in facts:
        lines += ["", knobs_markdown(facts["knobs"])]
    return "\n".join(lines)


KNOBS_FILE = os.path.join(os.path.dirname(__file__), "premise_knobs.json")


def load_knobs() -> dict[str, Any]:
    """The premise check of each setting tried before the transfer benchmark's plan was fixed."""
    with open(KNOBS_FILE) as f:
        return json.load(f)


def knobs_markdown(knobs: dict[str, Any]) -> str:
    """The knob table: what each setting gave the premise check, and which one the plan uses."""

    def pair(values: list[float]) -> str:
        return " / ".join(f"{v:.2f}" for v in values)

    lines = [
        f"How the transfer benchmark's settings were chosen: {knobs['about']} Measured at commit "
        f"{knobs['measured_at']}; these runs are not part of this reproduction and its fingerprint.",
        "",
        "| setting | source top-1 (val) | noise: false / missed % | noisy mAP | GT mAP | logistic regression, "
        f"{100 * PREMISE_FRACTION:g} % clean | gap closed, val | gap closed, test | source features, gap (val) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in knobs["knobs"]:
        setting = f"**{k['setting']}** (used)" if k.get("chosen") else k["setting"]
        cap = " (cap)" if k["source_at_cap"] else ""
        note = f" ({k['noise_note']})" if k.get("noise_note") else ""
        lines.append(
            f"| {setting} | {k['source_top1_val']:.2f}{cap} | {k['false']:.1f} / {k['missed']:.1f}{note} | "
            f"{pair(k['noisy'])} | {pair(k['gt'])} | {pair(k['logreg'])} | {k['gap_closed'][0]} % | "
            f"{k['gap_closed'][1]} % | {k['source_features_gap_val']} % |"
        )
    lines += [
        "",
        'Pairs are val / test mAP (%); "(cap)": the source\'s best evaluation was at its step cap. Not measured: '
        f"{knobs['not_measured']}.",
    ]
    return "\n".join(lines)


def write_results(
    output_dir: str,
    records: list[dict[str, Any]],
    budget: Budget,
    command: str,
    elapsed: float,
    run_seconds: list[Optional[float]],
    reference: Optional[dict[str, Any]] = None,
    run_cpu_seconds: Optional[list[Optional[float]]] = None,
    fingerprint: str = "",
    code_version: Optional[dict[str, Any]] = None,
) -> str:
    """Writes the results files into `output_dir`; returns the premise, tables and claims as markdown.

    Args:
        fingerprint: str. The plan's (`nlr_tf.reproduce.fingerprint`).
        code_version: dict. The commit the code ran from and whether its tree was clean.
    """
    benchmarks = [b for b in plan.BENCHMARKS if _of_benchmark(records, b)]
    results = {b: tables.Results(_of_benchmark(records, b)) for b in benchmarks}
    claims = {b: tables.claims(results[b], budget.main_fraction) for b in benchmarks}
    facts = premise(output_dir, records, results)
    sections = ["## The premise, measured first\n\n" + premise_markdown(facts)]
    parts = {b: _benchmark_sections(results[b], _of_benchmark(records, b), budget, b) for b in benchmarks}
    for table in ("Hu et al. 2019, Table 2,", "Veit et al.", "Table 4,", "Table 5,", "Regime map", "Investigation"):
        # Each table of both benchmarks side by side: the scratch benchmark's, then the transfer benchmark's.
        for benchmark in benchmarks:
            sections += _pick(parts[benchmark], table)
    body = "\n\n".join(sections)

    plots = []
    for benchmark in benchmarks:
        res = results[benchmark]
        suffix = "" if benchmark == "scratch" else f"_{benchmark}"
        if any(len(res.fractions[v]) > 1 for v in (tables.ML, tables.SL)):
            name = REGIME_PLOT.replace(".png", f"{suffix}.png")
            tables.plot_regime_map(res, os.path.join(output_dir, name))
            plots.append(f"![{benchmark} benchmark: metric against clean fraction]({name})")
        name = CURVES_PLOT.replace(".png", f"{suffix}.png")
        if tables.plot_training_curves(res, os.path.join(output_dir, name)):
            plots.append(f"![{benchmark} benchmark: training curves per activation]({name})")

    claim_lines = []
    for benchmark in benchmarks:
        claim_lines += [f"### {benchmark} benchmark", ""] + [tables.claim_markdown(c) for c in claims[benchmark]] + [""]
    agreement = None
    if reference is not None:
        agreement = {}
        for benchmark in benchmarks:
            theirs = _of_benchmark(reference["runs"], benchmark)
            if theirs:
                agreement[benchmark] = tables.rank_agreement(results[benchmark], tables.Results(theirs))
                claim_lines.append(
                    f"Row order against the reference run, {benchmark} benchmark (Spearman): "
                    + ", ".join(f"{t} {'–' if v is None else f'{v:.2f}'}" for t, v in agreement[benchmark].items())
                )
    seeds = sorted({r["seed"] for r in records if r["variant"] != "source"})
    one_seed = len(seeds) == 1
    md = "\n\n".join(
        [
            "# nlr_tf on digits_mosaic: the papers' tables",
            f"Generated by:\n\n```\n{command}\n```",
            "Code: "
            + (
                f"commit {code_version['commit']}"
                + ("" if code_version.get("clean_tree") else " with uncommitted changes")
                if code_version and code_version.get("commit")
                else "unknown version"
            )
            + (f"; plan fingerprint {fingerprint[:16]}." if fingerprint else "."),
            _time_line(elapsed, run_seconds, run_cpu_seconds or [None] * len(run_seconds)),
            "## Benchmarks\n\n"
            "- **scratch**: every network starts from random weights; the multi-label noisy labels come from a weak "
            "per-digit annotator (a logistic regression trained on three digits per class).\n"
            "- **transfer**: the papers' premise. A source classifier of printed characters (`glyphs`: digits, "
            "letters and symbols from the fonts in matplotlib's wheel, the analog of ImageNet) is trained first; "
            "every network starts from its backbone (noisy, GT and every single-label row; the fine-tuning rows and "
            "the heads from the noisy model), and the multi-label noisy labels are its top "
            f"{budget.annotator_top_k} predictions on each whole mosaic, mapped to the ten digits, as Hu et al. "
            "compiled COCO with an ImageNet Inception V3. Single-label noise is the same class-conditional noise "
            "on both benchmarks.\n"
            + "".join(
                f"- {benchmark}: `{budget.network(benchmark)[0]}` at {budget.network(benchmark)[1]} px"
                + (" (chosen by the premise check on val, docs/premise.md)" if benchmark == "transfer" else "")
                + ".\n"
                for benchmark in benchmarks
            )
            + "So the benchmarks differ in their start, their multi-label noise and, where the lines above say so, "
            "their network.",
            "## Protocol\n\n" + protocol(budget),
            f"Seeds {', '.join(map(str, seeds))}; cells are the mean over seeds on the test split"
            + (
                " (one seed: no spread, and the claims show only directions)"
                if one_seed
                else "; ± is the sample standard deviation over seeds; SE in claims is sample std / √n"
            )
            + '. "gap closed" is (row − noisy) / (gt − noisy): the share of the distance from the '
            "noisy baseline to the clean upper bound (Backbone (GT): every training label verified) that a row "
            f"covers. Rows marked *(extra)* are not in the paper's table. {tables.AT_CAP} marks a cell whose run, "
            "in some seed, had its best validation at its step cap: it was still improving when its budget ended "
            "(each table's footnote says in how many seeds).",
            body,
            "## Claims\n\n" + CLAIMS_RULE + "\n\n" + "\n".join(claim_lines),
            *(["## Plots\n\n" + "\n\n".join(plots)] if plots else []),
        ]
    )
    _atomic_write(os.path.join(output_dir, RESULTS_MD), md + "\n")
    out = {
        "command": command,
        "code_version": code_version,
        "fingerprint": fingerprint,
        "budget": dataclasses.asdict(budget),
        "elapsed_seconds": elapsed,
        "run_seconds": run_seconds,
        "run_cpu_seconds": run_cpu_seconds,
        "premise": facts,
        "aggregate": {b: results[b].as_dict() for b in benchmarks},
        "checks": {b: claims[b] for b in benchmarks},
        "rank_agreement": agreement,
        "runs": records,
    }
    _atomic_write(os.path.join(output_dir, RESULTS_JSON), json.dumps(_finite(out), indent=1, allow_nan=False))
    return body + "\n\n## Claims\n\n" + "\n".join(claim_lines)


def _pick(parts: list[str], table: str) -> list[str]:
    """The sections (a heading and the paragraphs up to the next heading) whose heading names `table`."""
    out, keep = [], False
    for part in parts:
        if part.startswith("## "):
            keep = table in part
        if keep:
            out.append(part)
    return out
