"""Evaluating a trained model on a split: predictions, then the papers' metrics.

Scores come from the model dir's `model.keras` on the split's images (or,
for a head trained on a feature cache, on that cache's features: the
backbone inside the saved model is skipped; `run_evaluation` reads a cache
only for a run whose backbone made it, else the cache's source images).
Metrics compare the scores with the verified labels, ignoring unverified
entries, as Veit evaluates Open Images. Predictions are kept as verified
entries (`prediction.predict_entries`): memory grows with the verified
entries and the images, not with images × classes.

`run_evaluation` is `nlr-eval`: the metrics, and with them the reports of
`gains`, `pr_curves`, `examples` and `summaries` (gain over a baseline by class frequency and
annotation quality, PR curves, an examples grid) as metrics.json, PNGs and
TensorBoard events.
"""

import dataclasses
import os
from typing import Any, Optional

import numpy as np

from nlr_tf import metrics
from nlr_tf.data import files
from nlr_tf.data.feature_cache import cache_mismatch
from nlr_tf.data.schema import DatasetError, DatasetInfo, load_dataset_info
from nlr_tf.evaluation import examples, gains, plotting, pr_curves, summaries, thresholds
from nlr_tf.metrics import VerifiedEntries
from nlr_tf.models.prediction import Evaluated, predict_entries
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.model_dir import CheckpointError


class EvalError(ValueError):
    """A model dir or dataset that cannot be evaluated together."""


def per_category_map(per_class_ap: np.ndarray, info: DatasetInfo) -> dict[str, Optional[float]]:
    """mAP within each label-map category (Veit Table 3)."""
    out = {}
    for category in sorted({c.category for c in info.classes}):
        aps = per_class_ap[[i for i, c in enumerate(info.classes) if c.category == category]]
        aps = aps[~np.isnan(aps)]
        out[category] = float(aps.mean()) if aps.size else None
    return out


def check_classes(model, info: DatasetInfo) -> None:
    """Refuses a dataset whose class count is not the model's (EvalError)."""
    if info.num_classes != model.num_classes:
        raise EvalError(f"the model has {model.num_classes} classes but dataset {info.path!r} has {info.num_classes}")


def evaluate(
    model,
    info: DatasetInfo,
    split: str,
    *,
    backbone: str,
    image_size: int = 0,
    batch_size: int = 64,
    scores_file: str = "",
):
    """The metrics dict of `model` on `split` (what `nlr-eval` writes to metrics.json); with `scores_file`, the
    verified entries they were measured on are kept there too (`write_scores`)."""
    check_classes(model, info)
    p = predict_entries(model, info, split, top_k=0, backbone=backbone, image_size=image_size, batch_size=batch_size)
    if scores_file:
        write_scores(scores_file, p.entries)
    return metrics_of_predictions(p, info, split)[0]


def write_scores(path: str, entries: VerifiedEntries) -> None:
    """A split's verified entries (npz: `VerifiedEntries.as_arrays`), from which its metrics can be computed again
    (resampled, say)."""
    files.save_npz(path, compressed=True, **entries.as_arrays())


def read_scores(path: str) -> Optional[VerifiedEntries]:
    """What `write_scores` kept, or None if there is no such file; a file of dense `scores`, `labels` and `mask`
    [N, d] (written before entries were kept) is read as its verified entries."""
    if not files.exists(path):
        return None
    arrays = files.load_npz(path)
    if "class_starts" in arrays:
        return VerifiedEntries.from_arrays(arrays)
    return VerifiedEntries.from_dense(arrays["scores"], arrays["labels"], arrays["mask"])


def metrics_of_predictions(p: Evaluated, info: DatasetInfo, split: str):
    """The metrics dict of predictions `p` of `split`, and the `metrics.Report` against verified labels."""
    report = metrics.evaluate(p.entries)
    result = {
        "split": split,
        "dataset": info.path,
        "num_images": p.num_rows,
        "multi_label": info.multi_label,
        **report.as_dict(info.class_names),
        "per_category_mAP": per_category_map(report.per_class_ap, info),
    }
    if p.truth is not None:
        # The built-in benchmark knows the truth of every entry.
        truth = metrics.evaluate(p.truth)
        result["against_truth"] = {"mAP": truth.map, "APall": truth.ap_all, "top1": truth.top1}
    return result, report


# === nlr-eval: metrics, the papers' reports, TensorBoard ===
PNG_FILES = ("gain_by_frequency.png", "gain_by_quality.png", "pr_curves.png", "examples.png")


@dataclasses.dataclass
class EvalConfig:
    """What `nlr-eval` varies. See `nlr_tf/cli/evaluate.py` for each field's flag."""

    model_dir: str
    dataset: str
    split: str = "test"
    batch_size: int = 64
    output: str = ""
    baseline_model_dir: str = ""
    num_examples: int = 16
    mixed_precision: str = "none"
    jit_compile: bool = False


@dataclasses.dataclass
class EvalOutputs:
    """What `run_evaluation` wrote.

    Args:
        result: dict. The contents of metrics.json.
        output: str. The metrics.json path; PNGs and TensorBoard events are
            in its folder.
        files: list of str. The PNG files written.
        notes: list of str. What was left out and why, or read elsewhere.
    """

    result: dict[str, Any]
    output: str
    files: list[str]
    notes: list[str]


def images_dataset(info: DatasetInfo) -> tuple[Optional[DatasetInfo], str]:
    """The dataset of images behind `info` (itself, or a feature cache's source), or None and why not."""
    if not info.feature_dim:
        return info, ""
    source = info.provenance["feature_cache"].get("source_dataset", "")
    try:
        return load_dataset_info(source), ""
    except DatasetError as e:
        return None, str(e)


def _matches_cache(cache: DatasetInfo, model_dir: str, run_config: dict[str, Any]) -> bool:
    """Whether the cache's features are the ones the run's own backbone computes (same weights, same input size)."""
    try:
        mine = run_files.backbone_source(run_config, model_dir)
    except CheckpointError:
        return False
    source = cache.provenance["feature_cache"].get("source_dataset", "")
    return not cache_mismatch(
        cache, source_dataset=source, backbone_source=mine, image_size=run_config.get("image_size", 0)
    )


def _predict_run(model, run_config, model_dir, info, split, batch_size, notes, jit_compile=False, top_k=0):
    """Predictions of a run on `split` (`Evaluated`, with each image's `top_k` classes): on the feature cache if its
    backbone made it, else on the images."""
    data = info
    if info.feature_dim and not _matches_cache(info, model_dir, run_config):
        data, why = images_dataset(info)
        if data is None:
            raise EvalError(
                f"the backbone of {model_dir!r} did not make the features of cache {info.path!r}, and the "
                f"cache's source dataset cannot be read: {why}"
            )
        notes.append(f"{model_dir}: evaluated on the images of {data.path} (its backbone did not make the cache)")
    return predict_entries(
        model,
        data,
        split,
        top_k=top_k,
        backbone=run_config["backbone"],
        image_size=run_config.get("image_size", 0),
        batch_size=batch_size,
        jit_compile=jit_compile,
    )


def run_thresholds(
    model, run_config, model_dir: str, dataset: str, split: str = "val", *, target_precision=None, batch_size=64
) -> thresholds.Thresholds:
    """Per-class decision thresholds of a run, chosen on the verified labels of a dataset split (`nlr-export`).

    Raises:
        EvalError, DatasetError: one-line reasons they cannot be chosen.
    """
    info = load_dataset_info(dataset)
    info.split_files(split)
    check_classes(model, info)
    entries = _predict_run(model, run_config, model_dir, info, split, batch_size, []).entries
    if not entries.scores.size:
        raise EvalError(f"split {split!r} of {info.path!r} has no verified labels to choose thresholds on")
    if not entries.labels.any():
        raise EvalError(f"split {split!r} of {info.path!r} has no verified positive of any class")
    return thresholds.choose_thresholds(entries, target_precision=target_precision)


def _aligned(p: Evaluated, ids: np.ndarray, what: str) -> Evaluated:
    """Predictions reordered to the image ids `ids`."""
    index = {image_id: i for i, image_id in enumerate(p.ids)}
    missing = [i for i in ids if i not in index]
    if missing or len(index) != len(ids):
        raise EvalError(f"{what} was evaluated on other images ({len(missing)} ids missing)")
    return p.take(np.array([index[i] for i in ids], np.intp))


def _training_step(model_dir: str) -> int:
    """The step the run ended at (TensorBoard's x axis for the eval scalars)."""
    return int((run_files.read_result(model_dir) or {}).get("step", 0))


def _gain_tables(stats: gains.ClassStatistics, model_ap, baseline_ap, class_names) -> dict[str, Any]:
    frequency = gains.gain_by_group(stats.frequency, model_ap, baseline_ap, class_names)
    frequency.update({"statistic": "noisy annotations of the class", "split": stats.noisy_split})
    about = {
        "statistic": "share of the class's noisy annotations that are correct (judged against label/true where a "
        "record has it, else against its verified labels)",
        "split": stats.quality_split,
        "judged_annotations": stats.judged,
    }
    if stats.judged:
        quality = {**gains.gain_by_group(stats.quality, model_ap, baseline_ap, class_names), **about}
    else:
        quality = {**about, "skipped": "no noisy annotation of the training splits has a known truth or verification"}
    return {"gain_by_frequency": frequency, "gain_by_quality": quality}


def run_evaluation(config: EvalConfig) -> EvalOutputs:
    """Evaluates a run on a split and writes every report `nlr-eval` writes.

    Writes metrics.json (mAP, APall, top-1, per-class AP, per-category mAP,
    and with a baseline its metrics and the gain tables by class frequency
    and annotation quality), the PNGs `pr_curves.png`, `examples.png` and
    `gain_by_frequency.png` / `gain_by_quality.png` beside it, and
    TensorBoard events in its folder (eval scalars, PR curves and the
    examples image at the run's final training step).

    Raises:
        EvalError, DatasetError: one-line reasons the evaluation cannot run.
    """
    notes: list[str] = []
    info = load_dataset_info(config.dataset)
    info.split_files(config.split)
    model, run_config = run_files.load_trained_model(config.model_dir, config.mixed_precision)
    check_classes(model, info)
    baseline = stats = None
    if config.baseline_model_dir:
        baseline, baseline_config = run_files.load_trained_model(config.baseline_model_dir, config.mixed_precision)
        if baseline.num_classes != model.num_classes:
            raise EvalError(
                f"baseline {config.baseline_model_dir!r} has {baseline.num_classes} classes but the model "
                f"{config.model_dir!r} has {model.num_classes}"
            )
        # The training labels' statistics; a feature cache holds the same label lists as its source.
        labels_info = images_dataset(info)[0] or info
        stats = gains.class_statistics(
            labels_info, run_config.get("noisy_split", "noisy"), run_config.get("clean_split", "clean")
        )

    # === Predictions and metrics ===
    top_k = examples.TOP_K if config.num_examples > 0 else 0
    p = _predict_run(
        model, run_config, config.model_dir, info, config.split, config.batch_size, notes, config.jit_compile, top_k
    )
    result, report = metrics_of_predictions(p, info, config.split)
    base_p = None
    if baseline is not None:
        base_p = _predict_run(
            baseline,
            baseline_config,
            config.baseline_model_dir,
            info,
            config.split,
            config.batch_size,
            notes,
            config.jit_compile,
            top_k,
        )
        base_p = _aligned(base_p, p.ids, f"baseline {config.baseline_model_dir!r}")
        base_result, base_report = metrics_of_predictions(base_p, info, config.split)
        result["baseline"] = {
            "model_dir": config.baseline_model_dir,
            **{k: base_result[k] for k in ("mAP", "APall", "top1", "per_category_mAP", "per_class_AP")},
        }
        result.update(_gain_tables(stats, report.per_class_ap, base_report.per_class_ap, info.class_names))

    # === Files beside metrics.json ===
    output = config.output or run_files.metrics_path(config.model_dir, config.split)
    out_dir = os.path.dirname(files.absolute(output))
    files.makedirs(out_dir)
    # An earlier evaluation's metrics.json goes first: written last, it says the files beside it are complete, so a
    # run that stops on the way (a full disk) leaves none beside this run's first files.
    files.remove(output)
    for name in PNG_FILES:  # an earlier evaluation's; each is written again if it applies
        files.remove(os.path.join(out_dir, name))
    written = []
    gain_plots = (("gain_by_frequency", "noisy annotations per class"), ("gain_by_quality", "annotation quality"))
    for key, xlabel in gain_plots:
        if result.get(key, {}).get("groups"):
            path = os.path.join(out_dir, f"{key}.png")
            title = f"AP gain over the baseline in {result[key]['num_groups']} groups of classes by {xlabel}"
            gains.plot_gain(result[key], path, title, xlabel, percent_range=key == "gain_by_quality")
            written.append(path)
    categories = [c.category for c in info.classes]
    curves = pr_curves.pr_curves(p.entries, categories)
    base_curves = None if base_p is None else pr_curves.pr_curves(base_p.entries, categories)
    written.append(os.path.join(out_dir, "pr_curves.png"))
    pr_curves.plot_pr_curves(curves, written[-1], base_curves)
    grid = _examples_grid(p, base_p, info, config, notes)
    if grid is not None:
        written.append(os.path.join(out_dir, "examples.png"))
        plotting.save_png(grid, written[-1])
    # The tags of the trainer's periodic evaluation (--eval_split), so the final point joins its curve.
    scalars = {k: result[k] for k in ("mAP", "APall", "top1")}
    scalars.update({f"per_category_mAP/{k}": v for k, v in result["per_category_mAP"].items()})
    scalars.update({f"against_truth/{k}": v for k, v in result.get("against_truth", {}).items()})
    summaries.write_tensorboard(out_dir, _training_step(config.model_dir), scalars, curves, grid)
    files.write_json(output, result)
    return EvalOutputs(result=result, output=output, files=written, notes=notes)


def _examples_grid(p, base_p, info: DatasetInfo, config: EvalConfig, notes: list[str]) -> Optional[np.ndarray]:
    """The split's first `num_examples` images (in file order) with their top-5 predictions, or None and a note."""
    if config.num_examples <= 0:
        return None
    images_info, why = images_dataset(info)
    if images_info is None or not images_info.has_split(config.split):
        why = why or f"dataset {images_info.path!r} has no split {config.split!r}"
        notes.append(f"examples.png skipped: the feature cache's images are not readable ({why})")
        return None
    index = {image_id.decode("utf-8"): i for i, image_id in enumerate(p.ids)}
    first = examples.first_images(images_info, config.split, config.num_examples)
    shown = [(index[image_id], image) for image_id, image in first if image_id in index]
    if len(shown) < len(first):
        notes.append(f"examples.png skipped: the images of {images_info.path!r} are not the evaluated records")
        return None
    return examples.render_examples(
        [image for _, image in shown], p, [i for i, _ in shown], info.class_names, baseline=base_p
    )
