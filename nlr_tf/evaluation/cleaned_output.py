"""What `nlr-clean-labels` writes: the cleaned dataset folder, the two CSV files, and the report as text.

The folder's contents are described in `cleaning.py`.
"""

import csv
import os
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from nlr_tf.data import files, schema
from nlr_tf.data.label_stats import split_stats
from nlr_tf.evaluation import suspects as suspects_lib

SUSPECTS_CSV = "suspected_errors.csv"
CLEANED_LABELS_CSV = "cleaned_labels.csv"
REPORT_JSON = "cleaning_report.json"


class CleaningError(ValueError):
    """A model, dataset and output folder that cannot be used together."""


def _names(classes: Sequence[schema.ClassInfo], labels: np.ndarray) -> str:
    return ";".join(classes[c].name for c in np.flatnonzero(labels))


def _copy_cleaned_split(
    images: schema.DatasetInfo, split: str, predictions, labels: np.ndarray, directory: str
) -> tuple[schema.SplitInfo, list[int]]:
    """Writes the split's records with cleaned labels, shard for shard.

    Returns:
        The split's `SplitInfo` and the prediction row of each written
        record, in writing order.
    """
    ids = predictions["id"]
    index = {image_id: i for i, image_id in enumerate(ids)}
    if len(index) != len(ids):
        raise CleaningError(f"split {split!r} of {images.path!r} has duplicate image ids: cannot match its records")
    cleaned = predictions["cleaned"]
    written: list[int] = []
    for name in images.splits[split].files:
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            records = tf.data.TFRecordDataset(os.path.join(images.path, name)).batch(256)
            for block in records.as_numpy_iterator():
                for serialized in block:
                    example = tf.train.Example.FromString(serialized)
                    feature = example.features.feature
                    value = feature[schema.IMAGE_ID].bytes_list.value
                    row = index.get(value[0].decode("utf-8") if value else "")
                    if row is None:
                        raise CleaningError(f"record {list(value)!r} of {name!r} in {images.path!r} has no prediction")
                    noisy = tf.train.Int64List(value=np.flatnonzero(labels[row]).tolist())
                    feature[schema.LABEL_NOISY].CopyFrom(tf.train.Feature(int64_list=noisy))
                    scores = tf.train.FloatList(value=cleaned[row].tolist())
                    feature[schema.LABEL_CLEANED_SCORES].CopyFrom(tf.train.Feature(float_list=scores))
                    writer.write(example.SerializeToString())
                    written.append(row)
    if len(written) != len(ids) or len(set(written)) != len(ids):
        raise CleaningError(
            f"split {split!r} of {images.path!r} holds {len(written)} records ({len(set(written))} distinct) "
            f"but {len(ids)} were predicted"
        )
    files = list(images.splits[split].files)
    return schema.SplitInfo(num_records=len(written), num_shards=len(files), files=files), written


def write_cleaned_dataset(
    images: schema.DatasetInfo,
    split: str,
    predictions,
    labels: np.ndarray,
    directory: str,
    *,
    copy_other_splits: bool,
    provenance: dict[str, Any],
) -> tuple[schema.DatasetInfo, list[int]]:
    """Writes the dataset folder with `split` cleaned into `directory`.

    Returns:
        Its `DatasetInfo` (fresh noise statistics in the provenance) and the
        prediction row of each record of the cleaned split, in file order.
    """
    splits = {}
    splits[split], order = _copy_cleaned_split(images, split, predictions, labels, directory)
    if copy_other_splits:
        for name, info in images.splits.items():
            if name != split:
                for f in info.files:
                    files.copy(os.path.join(images.path, f), os.path.join(directory, f))
                splits[name] = info
    out = schema.DatasetInfo(
        num_classes=images.num_classes,
        multi_label=images.multi_label,
        splits=splits,
        classes=images.classes,
        provenance=provenance,
        skipped=images.skipped,
        path=directory,
    )
    out.provenance["noise_statistics"] = {name: split_stats(out, name).summary() for name in sorted(splits)}
    out.write(directory)
    return out, order


def write_cleaned_labels_csv(
    path: str, classes: Sequence[schema.ClassInfo], predictions, labels: np.ndarray, rows: Sequence[int]
) -> None:
    """One row per image: noisy and cleaned label names, removed and added ones, c-hat per class."""
    with tf.io.gfile.GFile(path, "w") as f:  # UTF-8, lines as the csv module ends them
        out = csv.writer(f)
        out.writerow(
            ["image_id", "noisy_labels", "cleaned_labels", "removed", "added"]
            + [f"cleaned_score/{c.name}" for c in classes]
        )
        noisy, cleaned = predictions["noisy_labels"] > 0, labels > 0
        for i in rows:
            out.writerow(
                [
                    predictions["id"][i],
                    _names(classes, noisy[i]),
                    _names(classes, cleaned[i]),
                    _names(classes, noisy[i] & ~cleaned[i]),
                    _names(classes, cleaned[i] & ~noisy[i]),
                ]
                + [f"{v:.6g}" for v in predictions["cleaned"][i]]
            )


def write_suspects_csv(
    path: str, classes: Sequence[schema.ClassInfo], predictions, ranked: suspects_lib.Suspects, max_rows: int
) -> int:
    """The ranked suspects (the first `max_rows`; 0: all); returns the rows written."""
    n = len(ranked) if max_rows == 0 else min(max_rows, len(ranked))
    with_cleaned = "cleaned" in predictions
    with tf.io.gfile.GFile(path, "w") as f:  # UTF-8, lines as the csv module ends them
        out = csv.writer(f)
        out.writerow(
            ["rank", "image_id", "class_index", "class_id", "class_name", "kind", "kind_rank", "suspicion", "score"]
            + (["cleaned_score"] if with_cleaned else [])
            + ["verified", "is_error"]
        )
        for r in range(n):
            i, c = int(ranked.row[r]), int(ranked.cls[r])
            verified = ""
            if predictions["verified_mask"][i, c] > 0:
                verified = "present" if predictions["verified_labels"][i, c] > 0 else "absent"
            error = int(ranked.is_error[r])
            out.writerow(
                [
                    r + 1,
                    predictions["id"][i],
                    c,
                    classes[c].id,
                    classes[c].name,
                    suspects_lib.KINDS[ranked.kind[r]],
                    int(ranked.kind_rank[r]),
                    f"{ranked.suspicion[r]:.6g}",
                    f"{predictions['scores'][i, c]:.6g}",
                ]
                + ([f"{predictions['cleaned'][i, c]:.6g}"] if with_cleaned else [])
                + [verified, "" if error < 0 else error]
            )
    return n


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    s = report["suspects"]
    cands = s["candidates"]
    lines = [
        f"{report['split']}: {report['num_images']} images (features from {report['features']}); "
        f"{cands['false_annotation']} noisy positives and {cands['missed_label']} noisy negatives ranked; "
        f"wrote the {s['written']} most suspicious to {os.path.join(report['output_dir'], s['file'])}"
    ]
    tables = [("ranked suspects", report.get("suspect_precision"), s["ranked_by"])]
    if report.get("suspect_precision_self_confidence"):  # --finder=cleanlab: the project's own ranking beside it
        tables.append(("self-confidence ranking", report["suspect_precision_self_confidence"], "self-confidence alone"))
    for name, precision, ranked_by in tables:
        if not precision:
            continue
        depths = list(precision["all"]["precision_at"])
        lines.append(f"precision (%) of the {name} against label/true; ranked by {ranked_by}")
        lines.append(
            f"  {'kind':<17}{'errors':>8}{'base':>7}" + "".join(f"{'@' + d:>8}" for d in depths) + f"{'@K':>8}{'AP':>7}"
        )
        for kind, r in precision.items():
            lines.append(
                f"  {kind:<17}{r['num_errors']:>8}{_pct(r['base_rate']):>7}"
                + "".join(f"{_pct(r['precision_at'][d]):>8}" for d in depths)
                + f"{_pct(r['precision_at_K']):>8}{_pct(r['average_precision']):>7}"
            )
    cleaned = report.get("cleaned_labels")
    if cleaned:
        lines.append(
            f"cleaned labels (threshold {cleaned['threshold']}): dataset {cleaned['dataset']} "
            f"(splits {', '.join(cleaned['splits'])}), {cleaned['file']}; annotations "
            f"{cleaned['annotations_before']} -> {cleaned['annotations_after']} "
            f"({cleaned['removed']} removed, {cleaned['added']} added)"
        )
    effect = report.get("cleaning_effect")
    if effect:
        b, a, red = effect["before"], effect["after"], effect["relative_reduction"]
        lines.append(
            f"  false-annotation share {_pct(b['false_annotation_share'])}% -> {_pct(a['false_annotation_share'])}% "
            f"(relative reduction {_pct(red['false_annotation_share'])}%); missed-label share "
            f"{_pct(b['missed_label_share'])}% -> {_pct(a['missed_label_share'])}% "
            f"(relative reduction {_pct(red['missed_label_share'])}%)"
        )
        lines.append(
            f"  removed {effect['removed']['count']} annotations ({effect['removed']['false']} of them false), "
            f"added {effect['added']['count']} ({effect['added']['true']} of them true)"
        )
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    return "\n".join(lines)
