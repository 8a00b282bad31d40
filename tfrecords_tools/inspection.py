"""Reads a dataset back and reports its label statistics (Veit Fig. 4).

Per split: record count, per-class frequency of noisy annotations, per-class
annotation quality (share of noisy annotations that are correct, judged
against `label/true` where present, else against verified labels), and the
overall shares of false noisy annotations and of missed true labels, and
the most frequent confusions (a false noisy label given where the reference
holds a class).
"""

from typing import Any, Optional

from nlr_tf.data.label_stats import split_stats
from nlr_tf.data.schema import DatasetInfo

MAX_CONFUSIONS = 10  # confusion pairs kept per split


def inspect_dataset(info: DatasetInfo, splits: Optional[list[str]] = None) -> dict[str, Any]:
    """Statistics of every split (or of `splits`) as a JSON-ready dict."""
    report: dict[str, Any] = {
        "path": info.path,
        "num_classes": info.num_classes,
        "multi_label": info.multi_label,
        "skipped_bad_rows": info.skipped.get("count", 0),
        "splits": {},
    }
    for split in splits or sorted(info.splits):
        stats = split_stats(info, split)
        report["splits"][split] = {
            "summary": stats.summary(),
            "per_class": stats.per_class(info.class_names),
            "confusions": stats.confusions(info.class_names, MAX_CONFUSIONS),
        }
    return report


def _pct(x: Optional[float]) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def format_report(report: dict[str, Any], max_classes: int = 50) -> str:
    """A plain-text report: split counts, noise shares, per-class table."""
    lines = [
        f"dataset {report['path']}: {report['num_classes']} classes, "
        f"{'multi-label' if report['multi_label'] else 'single-label'}, "
        f"{report['skipped_bad_rows']} bad rows skipped at conversion",
        "",
        f"{'split':<12}{'records':>9}{'noisy ann.':>12}{'judged':>9}{'false %':>9}{'missed %':>10}{'verified +/-':>16}",
    ]
    for split, s in report["splits"].items():
        m = s["summary"]
        lines.append(
            f"{split:<12}{m['num_records']:>9}{m['noisy_annotations']:>12}{m['noisy_annotations_judged']:>9}"
            f"{_pct(m['false_annotation_share']):>9}{_pct(m['missed_label_share']):>10}"
            f"{m['verified_positive']:>8}/{m['verified_negative']:<7}"
        )
    lines.append("")
    lines.append("false % = share of noisy annotations that are wrong; missed % = share of true labels absent")
    lines.append("from the noisy labels; judged against label/true where present, else verified labels.")
    for split, s in report["splits"].items():
        rows = s["per_class"]
        lines += [
            "",
            f"per class, split {split}:",
            f"{'class':<24}{'noisy':>8}{'freq %':>8}{'quality %':>11}{'missed':>8}",
        ]
        for row in rows[:max_classes]:
            lines.append(
                f"{row['name'][:23]:<24}{row['noisy_count']:>8}{100 * row['frequency']:>8.1f}"
                f"{_pct(row['annotation_quality']):>11}{row['missed']:>8}"
            )
        if len(rows) > max_classes:
            lines.append(f"... {len(rows) - max_classes} more classes (see --output_json)")
        if s["confusions"]:
            lines += ["", f"most frequent confusions, split {split} (true class present -> false noisy label):"]
            lines += [
                f"  {c['true'][:23]:>23} -> {c['noisy'][:23]:<24}{c['count']:>8}{100 * c['share']:>7.1f} % of false"
                for c in s["confusions"]
            ]
    return "\n".join(lines)
