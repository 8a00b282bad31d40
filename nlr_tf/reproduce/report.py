"""results.json, results.md and the plots of a reproduction."""

import dataclasses
import json
import os
from typing import Any, Optional

from nlr_tf.reproduce import tables
from nlr_tf.reproduce.plan import Budget

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
REGIME_PLOT, CURVES_PLOT = "regime_map.png", "training_curves.png"

_VERDICT = {True: "held", False: "did not hold", None: "undetermined"}


def _atomic_write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def protocol(budget: Budget) -> str:
    """The rules every row trained under, as a paragraph of results.md."""

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

    sizes = budget.dataset_sizes or (12000, 2000, 4000)
    return "\n".join(
        [
            "Every row trains under the rules of its stage, and reports the test metrics of its best-val weights "
            "(`nlr-train --eval_split=val --early_stopping_patience=N --restore_best`). Adam everywhere.",
            "",
            stage("scratch", "the whole network from random init: noisy, GT, and every single-label row"),
            stage(
                "whole",
                "the whole network from the noisy model: Noisy-FT-W and the extra two-step rows; "
                "a grid would cost too much, so one rate: the backbone's, ten times lower than a new head's",
            ),
            stage("heads", "heads on the frozen noisy backbone's feature cache: the multi-label head rows"),
            *(
                [
                    f"- **pretext** (the premise investigation only): {budget.pretext.max_steps} steps of rotation "
                    f"prediction, batch {budget.pretext.batch_size} (each image at four angles), learning rate "
                    f"{budget.pretext.learning_rates[0]:g}, no evaluation."
                ]
                if budget.premise
                else []
            ),
            f"- Veit WP pretrains its cleaning net on the clean set alone for {budget.cleaning_pretrain_steps} steps "
            "(where its L1 loss has levelled off) before, and outside, the joint budget it shares with TJ.",
            f"- Learning rates are chosen on seed {budget.grid_seeds[0]}'s validation runs; the other seeds reuse "
            "each row's choice at that fraction.",
            "- The logistic-regression rows are scikit-learn's `LogisticRegression` (lbfgs), one per class, on the "
            f"same cached features, with C chosen on val from {{{', '.join(f'{c:g}' for c in budget.reference_c)}}}: "
            "the convex reference for the head rows (Noisy-FT-L is the same model class).",
            "- The rows from other works train under the same rules: Misra et al.'s two classifiers and Forward "
            "with Patrini's anchor-point T read no clean label and train once per seed; Forward (T counted from the "
            "clean set's paired labels), CleanNet-wsoft (CleanNet on the noisy model's cached features, see "
            "`nlr_tf/models/cleannet_model.py` for the choices Lee et al. leave open) and confident learning "
            "(5-fold logistic regression on the cached features, then cleanlab) use the fraction's clean set. "
            "Hu Table 4's fine-tuning rows start from the Forward and CleanNet runs of the same seed.",
            f"- Data: digits_mosaic, {sizes[0]} training images, {sizes[1]} val, {sizes[2]} test; the clean set of "
            "fraction f is built from f of the training digit scans only.",
        ]
    )


def _time_line(elapsed: float, run_seconds: list[Optional[float]]) -> str:
    """The time the tables cost: this invocation's wall time and the sum of every run's own time.

    A resumed plan reuses finished runs, so the last invocation's wall time
    alone says little; each run records its own seconds when it finishes.
    """
    timed = [s for s in run_seconds if s is not None]
    line = (
        f"Time on this machine (2 CPU cores): the {len(run_seconds)} runs took {sum(timed) / 60:.0f} min in all "
        f"(each run's own time, summed); this invocation's wall time was {elapsed / 60:.1f} min."
    )
    if len(timed) < len(run_seconds):
        line += f" {len(run_seconds) - len(timed)} runs finished before run times were recorded and are not counted."
    return line


def write_results(
    output_dir: str,
    records: list[dict[str, Any]],
    budget: Budget,
    command: str,
    elapsed: float,
    run_seconds: list[Optional[float]],
    reference: Optional[dict[str, Any]] = None,
) -> str:
    """Writes the results files into `output_dir`; returns the tables and claims as markdown."""
    res = tables.Results(records)
    claims = tables.claims(res, budget.main_fraction)
    main = budget.main_fraction
    sections = []
    if res.fractions[tables.ML]:
        sections += [
            "## Hu et al. 2019, Table 2: multi-label classification (mAP, then APall, %; gap closed in parentheses)",
            tables.hu_table2(res),
            "## Veit et al. 2017, Table 2: label cleaning against fine-tuning (APall, then MAP, %)",
            tables.veit_table2(res),
        ]
    if main in res.fractions[tables.SL]:
        sections += [
            f"## Hu et al. 2019, Table 4: single-label classification (top-1, %, {100 * main:g} % clean)",
            tables.hu_table4(res, main),
        ]
    sections += [
        f"## Hu et al. 2019, Table 5: training g and h (%, {100 * main:g} % clean)",
        tables.hu_table5(res, main),
    ]
    for variant in (tables.ML, tables.SL):
        if len(res.fractions[variant]) > 1:
            sections += [
                f"## Regime map, {variant.replace('_', '-')}: gap closed against the clean fraction",
                tables.regime_table(res, variant),
                tables.regime_findings(res, variant),
            ]
    if any(res.has(tables.ML, key) for key in tables.PREMISE_KEYS):
        accuracy = [r["pretext_rotation_accuracy"] for r in records if "pretext_rotation_accuracy" in r]
        sections += [
            "## Investigation: the papers' premise of a strong starting backbone "
            f"(multi-label mAP, %, {100 * main:g} % clean)",
            "Both papers start from ImageNet weights; here the backbone starts from random weights. In this "
            f"investigation it first learns to predict the rotation of the training images (no labels; "
            f"{budget.pretext.max_steps} steps of {budget.pretext.batch_size} images at four angles; rotation "
            f"accuracy on training images {', '.join(f'{100 * a:.1f}' for a in accuracy)} %), then every row "
            "trains from it under the same protocol. Not a row of the papers' tables.",
            tables.premise_table(res, main),
        ]
    body = "\n\n".join(sections)

    plots = []
    if any(len(res.fractions[v]) > 1 for v in (tables.ML, tables.SL)):
        tables.plot_regime_map(res, os.path.join(output_dir, REGIME_PLOT))
        plots.append(f"![metric against clean fraction]({REGIME_PLOT})")
    if tables.plot_training_curves(res, os.path.join(output_dir, CURVES_PLOT)):
        plots.append(f"![training curves per activation]({CURVES_PLOT})")

    claim_lines = [
        f"- **{_VERDICT[c['held']]}**"
        + (
            ""
            if c["beyond_2se"] is None
            else (" (beyond 2 SE)" if c["beyond_2se"] else " (not beyond 2 SE everywhere)")
        )
        + f": {c['claim']}. {c['detail']}"
        for c in claims
    ]
    agreement = None
    if reference is not None:
        agreement = tables.rank_agreement(res, tables.Results(reference["runs"]))
        claim_lines.append(
            "\nRow order against the reference run (Spearman): "
            + ", ".join(f"{t} {'–' if v is None else f'{v:.2f}'}" for t, v in agreement.items())
        )
    seeds = ", ".join(map(str, res.seeds))
    md = "\n\n".join(
        [
            "# nlr_tf on digits_mosaic: the papers' tables",
            f"Generated by:\n\n```\n{command}\n```",
            _time_line(elapsed, run_seconds),
            "## Protocol\n\n" + protocol(budget),
            f"Seeds {seeds}; cells are the mean over seeds"
            + (" ± the standard deviation" if len(res.seeds) > 1 else "")
            + ' on the test split. "gap closed" is (row − noisy) / (gt − noisy): the share of the distance from the '
            "noisy baseline to the clean upper bound (Backbone (GT): every training label verified) that a row "
            "covers. Rows marked *(extra)* are not in the paper's table.",
            body,
            "## Claims\n\nEach compares two rows seed by seed: the mean difference (points) and its standard error "
            "over seeds.\n\n" + "\n".join(claim_lines),
            *(["## Plots\n\n" + "\n\n".join(plots)] if plots else []),
        ]
    )
    _atomic_write(os.path.join(output_dir, RESULTS_MD), md + "\n")
    results = {
        "command": command,
        "budget": dataclasses.asdict(budget),
        "elapsed_seconds": elapsed,
        "run_seconds": run_seconds,
        "aggregate": res.as_dict(),
        "checks": claims,
        "rank_agreement": agreement,
        "runs": records,
    }
    _atomic_write(os.path.join(output_dir, RESULTS_JSON), json.dumps(results, indent=1))
    return body + "\n\n## Claims\n\n" + "\n".join(claim_lines)
