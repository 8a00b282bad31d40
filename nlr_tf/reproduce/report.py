"""results.json, results.md and the plots of a reproduction."""

import dataclasses
import json
import math
import os
from typing import Any, Optional

from nlr_tf.data import files
from nlr_tf.reproduce import claims, markdown, plots, premise
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.protocol import protocol
from nlr_tf.reproduce.results import AT_CAP, ML, PREMISE_KEYS, SL, Results, rank_agreement
from nlr_tf.reproduce.rows import BENCHMARKS

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
REGIME_PLOT, CURVES_PLOT = "regime_map.png", "training_curves.png"


atomic_write = files.write_text


def _hours(seconds: float) -> str:
    """Hours and minutes, rounded once to the minute."""
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def time_line(elapsed: float, run_seconds: list[Optional[float]], run_cpu_seconds: list[Optional[float]]) -> str:
    """The time the tables cost: every run's wall and CPU seconds, summed (the learning-rate grids' other runs,
    the source and pretext runs included).

    A resumed plan reuses finished runs, so the last invocation's wall time
    alone says little; each run records its own wall and CPU seconds
    (`time.process_time`, every thread of the process) when it finishes.
    """
    wall = [s for s in run_seconds if s is not None]
    cpu = [s for s in run_cpu_seconds if s is not None]
    line = (
        f"Time on this machine ({os.cpu_count()} CPU cores): the {len(run_seconds)} runs took {_hours(sum(wall))} "
        "of wall time and "
        f"{_hours(sum(cpu))} of CPU time (every thread of the process) in all, each run's own time summed. This "
        f"invocation's wall time was {elapsed / 60:.1f} min."
    )
    if len(wall) < len(run_seconds):
        line += f" {len(run_seconds) - len(wall)} runs finished before run times were recorded and are not counted."
    if len(cpu) < len(run_cpu_seconds):
        line += f" {len(run_cpu_seconds) - len(cpu)} runs finished before CPU times were recorded and are not counted."
    return line


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float (an infinite t) replaced by None: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def _of_benchmark(records: list[dict[str, Any]], benchmark: str) -> list[dict[str, Any]]:
    """The table records of one benchmark (the source run is no row of the papers' tables)."""
    return [r for r in records if r.get("benchmark", "scratch") == benchmark and r["variant"] in (ML, SL)]


def _benchmark_sections(res: Results, records, budget: Budget, benchmark: str) -> list[str]:
    """One benchmark's tables, regime maps and investigation, each heading naming the benchmark."""
    main = budget.main_fraction
    name = f"{benchmark} benchmark"
    sections = []
    if res.fractions[ML]:
        sections += [
            f"## Hu et al. 2019, Table 2, {name}: multi-label classification (mAP, then APall, %; gap closed in "
            "parentheses)",
            markdown.hu_table2(res),
            f"## Veit et al. 2017, Table 2, {name}: label cleaning against fine-tuning (APall, then MAP, %)",
            markdown.veit_table2(res),
        ]
    if main in res.fractions[SL]:
        sections += [
            f"## Hu et al. 2019, Table 4, {name}: single-label classification (top-1, %, {100 * main:g} % clean)",
            markdown.hu_table4(res, main),
        ]
    sections += [
        f"## Hu et al. 2019, Table 5, {name}: training g and h (%, {100 * main:g} % clean)",
        markdown.hu_table5(res, main),
    ]
    for variant in (ML, SL):
        if len(res.fractions[variant]) > 1:
            sections += [
                f"## Regime map, {name}, {variant.replace('_', '-')}: gap closed against the clean fraction",
                markdown.regime_table(res, variant),
                markdown.regime_findings(res, variant),
            ]
    if any(res.has(ML, key) for key in PREMISE_KEYS):
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
            markdown.premise_table(res, main),
        ]
    return sections


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
    benchmarks = [b for b in BENCHMARKS if _of_benchmark(records, b)]
    results = {b: Results(_of_benchmark(records, b)) for b in benchmarks}
    checks = {b: claims.claims(results[b], budget.main_fraction) for b in benchmarks}
    facts = premise.premise(output_dir, records, results)
    sections = ["## The premise, measured first\n\n" + premise.premise_markdown(facts)]
    parts = {b: _benchmark_sections(results[b], _of_benchmark(records, b), budget, b) for b in benchmarks}
    for table in ("Hu et al. 2019, Table 2,", "Veit et al.", "Table 4,", "Table 5,", "Regime map", "Investigation"):
        # Each table of both benchmarks side by side: the scratch benchmark's, then the transfer benchmark's.
        for benchmark in benchmarks:
            sections += _pick(parts[benchmark], table)
    body = "\n\n".join(sections)

    figures = []
    for benchmark in benchmarks:
        res = results[benchmark]
        suffix = "" if benchmark == "scratch" else f"_{benchmark}"
        if any(len(res.fractions[v]) > 1 for v in (ML, SL)):
            name = REGIME_PLOT.replace(".png", f"{suffix}.png")
            plots.plot_regime_map(res, os.path.join(output_dir, name))
            figures.append(f"![{benchmark} benchmark: metric against clean fraction]({name})")
        name = CURVES_PLOT.replace(".png", f"{suffix}.png")
        if plots.plot_training_curves(res, os.path.join(output_dir, name)):
            figures.append(f"![{benchmark} benchmark: training curves per activation]({name})")

    claim_lines = []
    for benchmark in benchmarks:
        claim_lines += [f"### {benchmark} benchmark", ""] + [claims.claim_markdown(c) for c in checks[benchmark]] + [""]
    agreement = None
    if reference is not None:
        agreement = {}
        for benchmark in benchmarks:
            theirs = _of_benchmark(reference["runs"], benchmark)
            if theirs:
                agreement[benchmark] = rank_agreement(results[benchmark], Results(theirs))
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
            time_line(elapsed, run_seconds, run_cpu_seconds or [None] * len(run_seconds)),
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
            f"covers. Rows marked *(extra)* are not in the paper's table. {AT_CAP} marks a cell whose run, "
            "in some seed, had its best validation at its step cap: it was still improving when its budget ended "
            "(each table's footnote says in how many seeds).",
            body,
            "## Claims\n\n" + claims.CLAIMS_RULE + "\n\n" + "\n".join(claim_lines),
            *(["## Plots\n\n" + "\n\n".join(figures)] if figures else []),
        ]
    )
    atomic_write(os.path.join(output_dir, RESULTS_MD), md + "\n")
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
        "checks": {b: checks[b] for b in benchmarks},
        "rank_agreement": agreement,
        "runs": records,
    }
    atomic_write(os.path.join(output_dir, RESULTS_JSON), json.dumps(finite_json(out), indent=1, allow_nan=False))
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
