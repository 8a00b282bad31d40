"""Cleaned labels and suspected label errors of a split, from a trained model.

What `nlr-clean-labels` writes into its output folder:

- `suspected_errors.csv` (every method): the split's (image, class) entries
  ranked as candidate label errors by the model's class scores (see
  `suspects.py`): noisy positives it finds unlikely (`false_annotation`,
  suspicion 1 - score) and noisy negatives it finds likely (`missed_label`,
  suspicion = score), in one list, most suspicious first, cut at
  `max_suspects` rows. Columns: `rank`, `image_id`, `class_index`,
  `class_id`, `class_name`, `kind`, `kind_rank` (rank within its kind: a
  list filtered by kind keeps its own ranking), `suspicion`, `score`,
  `cleaned_score` (c-hat; label_cleaning models only), `verified`
  (`present` / `absent` where the record verifies the class, else empty:
  `absent` on a false annotation or `present` on a missed label is a
  confirmed error, the other way round a confirmed correct label) and
  `is_error` (1 / 0 against `label/true`, empty where the truth is not
  known). For a `label_cleaning` model the score is the classifier's p-hat.
- For a `label_cleaning` model (Veit et al. 2017 output the cleaned labels
  of the whole noisy set), the folder is also a dataset in the usual schema:
  the cleaned split's records are copied unchanged except `label/noisy`,
  which holds the thresholded c-hat, and the new `label/cleaned_scores`
  (raw c-hat); the other splits are copied as they are. It feeds straight
  back into `nlr-train --dataset=...`. `cleaned_labels.csv` has one row per
  image: `image_id`, `noisy_labels`, `cleaned_labels`, `removed`, `added`
  (class names joined by `;`) and `cleaned_score/<class name>` per class.
- `cleaning_report.json`: counts and, where every image has `label/true`,
  the precision of the ranked suspects per kind (`suspect_precision`) and
  how much the cleaned labels reduce false and missed annotations
  (`cleaning_effect`).

The folder appears only once complete. Predictions come from the split's
images, or from a feature cache of them passed as the dataset (the records
to copy then come from the cache's source dataset; a few images are scored
from pixels to prove the cache holds this model's features). Scores of the
whole split are held in memory, as `nlr-eval` does.
"""

import datetime
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from nlr_tf.data import files, schema
from nlr_tf.data.output_dir import atomic_output_dir
from nlr_tf.evaluation import cleaning_checks
from nlr_tf.evaluation import suspects as suspects_lib
from nlr_tf.evaluation.cleaned_output import (
    CLEANED_LABELS_CSV,
    REPORT_JSON,
    SUSPECTS_CSV,
    CleaningError,
    write_cleaned_dataset,
    write_cleaned_labels_csv,
    write_suspects_csv,
)
from nlr_tf.models import prediction
from nlr_tf.training.model_dir import load_trained_model

DEFAULT_DEPTHS = (100, 500, 1000)


# === Predictions ===


def predict_labels(model, info: schema.DatasetInfo, split: str, **kwargs) -> dict[str, np.ndarray]:
    """`prediction.predict`, with the image ids as str.

    Dense [N, d] arrays, not evaluation's verified entries: cleaning rewrites
    every image's noisy labels from its c-hat, so it reads both in full.
    """
    out = prediction.predict(model, info, split, **kwargs)
    out["id"] = np.array([i.decode("utf-8") for i in out["id"]], dtype=object)
    return out


def threshold_cleaned(cleaned: np.ndarray, threshold: float, multi_label: bool = True) -> np.ndarray:
    """Cleaned labels {0, 1} [N, d] from c-hat [N, d].

    Multi-label: every class with c-hat > `threshold`. Single-label: the
    class of highest c-hat if it is > `threshold` (at most one label).
    """
    cleaned = np.asarray(cleaned)
    if multi_label:
        return (cleaned > threshold).astype(np.float32)
    rows, top = np.arange(len(cleaned)), np.argmax(cleaned, axis=1)
    out = np.zeros_like(cleaned, np.float32)
    out[rows, top] = cleaned[rows, top] > threshold
    return out


# === The whole run ===


def clean_labels(
    model_dir: str,
    dataset: str,
    output_dir: str,
    *,
    split: str = "noisy",
    threshold: float = 0.5,
    max_suspects: int = 10000,
    precision_depths: Sequence[int] = DEFAULT_DEPTHS,
    batch_size: int = 64,
    copy_other_splits: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    finder: str = "self_confidence",
) -> dict[str, Any]:
    """Writes a split's suspected label errors (and cleaned labels) to `output_dir`.

    Args:
        model_dir: str. A finished `nlr-train` run.
        dataset: str. The dataset of images, or a feature cache of it.
        output_dir: str. Folder to create (appears only when complete).
        split: str. Split to clean. Defaults to "noisy".
        threshold: float. c-hat above it is a cleaned label. Defaults to 0.5.
        max_suspects: int. Rows of the suspects CSV (0: all). Defaults to
            10,000.
        precision_depths: ints. Depths of the suspects' precision. Defaults
            to 100, 500, 1000 (K, the number of errors, is always added).
        batch_size: int. Images per step. Defaults to 64.
        copy_other_splits: bool. Copy the other splits into the cleaned
            dataset (needed to train on it with clean examples). Defaults
            to True.
        overwrite: bool. Replace an existing `output_dir`. Defaults to False.
        progress: bool. Progress bars on stderr. Defaults to False.
        finder: str. How the suspects are ranked: "self_confidence" (the
            model's own improbability of each noisy entry) or "cleanlab"
            (confident learning's flagged entries first; the report then
            gives the self-confidence ranking's precision beside it).
            Defaults to "self_confidence".

    Returns:
        The report written to `cleaning_report.json`.

    Raises:
        CleaningError, DatasetError, EvalError: one line naming the problem.
    """
    if finder not in suspects_lib.FINDERS:
        raise CleaningError(f"--finder must be one of {', '.join(suspects_lib.FINDERS)}, got {finder!r}")
    info = schema.load_dataset_info(dataset)
    info.split_files(split)
    images = cleaning_checks.images_dataset(info, split)
    output_dir = files.absolute(output_dir)
    if output_dir in (info.path, images.path, files.absolute(model_dir)):
        raise CleaningError(f"--output_dir={output_dir} must be a new folder, not the dataset or the model dir")
    if files.exists(output_dir) and not overwrite:
        raise CleaningError(f"output folder {output_dir!r} already exists (pass --overwrite to replace it)")
    model, run_config = load_trained_model(model_dir)
    cleaning_checks.check_model_fits(model, run_config, info)
    backbone, image_size = run_config["backbone"], run_config.get("image_size", 0)

    # === Predictions and suspects ===
    p = predict_labels(
        model, info, split, backbone=backbone, image_size=image_size, batch_size=batch_size, progress=progress
    )
    if info.feature_dim:
        cleaning_checks.check_cache_scores(model, images, split, p, backbone=backbone, image_size=image_size)
    all_true = bool(p["has_true"].all())
    own = suspects_lib.rank_suspects(p["scores"], p["noisy_labels"], p["true_labels"], p["has_true"])
    ranked, flagged = own, None
    if finder == "cleanlab":
        ranked, flagged = suspects_lib.rank_suspects_with_cleanlab(
            p["scores"], p["noisy_labels"], info.multi_label, p["true_labels"], p["has_true"]
        )
    cleaning = "cleaned" in model.extra_outputs  # the model outputs c-hat (label cleaning)
    score = "the classifier's p-hat (c-hat is the cleaned_score column)" if cleaning else "the model's class score"
    ranked_by = f"1 - score for noisy positives, score for noisy negatives; score = {score}"
    if finder == "cleanlab":
        ranked_by = (
            f"cleanlab's confident learning on the model's scores: the {flagged} entries it flags first, "
            f"then the others; within each, {ranked_by}"
        )
    report: dict[str, Any] = {
        "model_dir": files.absolute(model_dir),
        "method": run_config.get("method"),
        "dataset": info.path,
        "split": split,
        "features": "feature cache" if info.feature_dim else "images",
        "num_images": int(len(p["id"])),
        "output_dir": output_dir,
        "suspects": {
            "file": SUSPECTS_CSV,
            "finder": finder,
            "ranked_by": ranked_by,
            "candidates": {kind: ranked.count(kind) for kind in suspects_lib.KINDS},
            **({"cleanlab_flagged": flagged} if flagged is not None else {}),
        },
        "suspect_precision": suspects_lib.suspect_precision(ranked, precision_depths) if all_true else None,
        **(
            {"suspect_precision_self_confidence": suspects_lib.suspect_precision(own, precision_depths)}
            if finder == "cleanlab" and all_true
            else {}
        ),
        "cleaned_labels": None,
    }
    if not cleaning:
        report["note"] = (
            f"cleaned labels need a label_cleaning model; {model_dir} is a {run_config.get('method')!r} run: "
            "wrote only the suspected errors"
        )

    # === Outputs, all or nothing ===
    with atomic_output_dir(output_dir, overwrite, last=(REPORT_JSON, schema.DATASET_JSON)) as tmp:
        report["suspects"]["written"] = write_suspects_csv(
            os.path.join(tmp, SUSPECTS_CSV), info.classes, p, ranked, max_suspects
        )
        if cleaning:
            labels = threshold_cleaned(p["cleaned"], threshold, info.multi_label)
            provenance = {
                "source": "nlr-clean-labels",
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "cleaned_labels": {
                    "model_dir": report["model_dir"],
                    "method": run_config.get("method"),
                    "source_dataset": images.path,
                    "features_from": info.path,
                    "split": split,
                    "threshold": threshold,
                    "rule": "c_hat > threshold" if info.multi_label else "argmax c_hat, if > threshold",
                    "scores_key": schema.LABEL_CLEANED_SCORES,
                },
                "source_provenance": images.provenance,
            }
            cleaned_info, rows = write_cleaned_dataset(
                images, split, p, labels, tmp, copy_other_splits=copy_other_splits, provenance=provenance
            )
            write_cleaned_labels_csv(os.path.join(tmp, CLEANED_LABELS_CSV), info.classes, p, labels, rows)
            noisy = p["noisy_labels"] > 0
            report["cleaned_labels"] = {
                "file": CLEANED_LABELS_CSV,
                "dataset": output_dir,
                "splits": sorted(cleaned_info.splits),
                "threshold": threshold,
                "annotations_before": int(noisy.sum()),
                "annotations_after": int(labels.sum()),
                "removed": int((noisy & (labels == 0)).sum()),
                "added": int((~noisy & (labels > 0)).sum()),
                "noise_statistics": cleaned_info.provenance["noise_statistics"][split],
            }
            if all_true:
                report["cleaning_effect"] = suspects_lib.cleaning_effect(p["noisy_labels"], labels, p["true_labels"])
        files.write_json(os.path.join(tmp, REPORT_JSON), report)
    return report
