"""The protocol section of results.md: the rules every row trained under, and where each row starts."""

from typing import Optional

from nlr_tf.reproduce import plan
from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.rows import PREMISE_ROWS


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
    premise = {row.key for row in PREMISE_ROWS}
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
    from nlr_tf.models import confident_learning as confident_learning_model
    from nlr_tf.models.cleannet import model as cleannet_model

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
            "clean set's paired labels), CleanNet-wsoft (see `nlr_tf/models/cleannet/model.py` for the choices Lee et "
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
