"""Label statistics: class frequency and annotation quality, as Veit Fig. 4.

One accumulator serves the writers (noise statistics in `dataset.json`),
`nlr-inspect` and the evaluation reports (reading shards back:
`split_stats`). The reference for judging a noisy
annotation is the known truth (`label/true`) where a record has it, else the
verified labels; classes that are neither are unverified and not judged.
"""

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.data.schema import DatasetInfo


class LabelStats:
    """Accumulates per-class label statistics over records.

    Args:
        num_classes: int. Number of classes d.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        d = num_classes
        self.num_records = 0
        self.records_with_truth = 0
        self.records_with_verified = 0
        self.records_without_noisy = 0
        self.noisy_count = np.zeros(d, np.int64)  # noisy annotations per class
        self.noisy_judged = np.zeros(d, np.int64)  # ... whose correctness is known
        self.noisy_correct = np.zeros(d, np.int64)  # ... that are correct
        self.reference_pos = np.zeros(d, np.int64)  # known-present labels
        self.missed = np.zeros(d, np.int64)  # ... absent from the noisy labels
        self.verified_pos = np.zeros(d, np.int64)
        self.verified_neg = np.zeros(d, np.int64)
        # [t, n]: false noisy annotations n on records whose reference holds t
        self.false_given_true = np.zeros((d, d), np.int64)

    def add(
        self,
        noisy: Sequence[int],
        verified_pos: Sequence[int] = (),
        verified_neg: Sequence[int] = (),
        true: Optional[Sequence[int]] = None,
    ) -> None:
        self.num_records += 1
        noisy = np.unique(np.asarray(noisy, np.int64))
        vpos = np.unique(np.asarray(verified_pos, np.int64))
        vneg = np.unique(np.asarray(verified_neg, np.int64))
        if noisy.size == 0:
            self.records_without_noisy += 1
        self.noisy_count[noisy] += 1
        self.verified_pos[vpos] += 1
        self.verified_neg[vneg] += 1
        if vpos.size or vneg.size:
            self.records_with_verified += 1
        if true is not None:
            self.records_with_truth += 1
            ref_pos = np.unique(np.asarray(true, np.int64))
            judged = noisy
        else:
            ref_pos = vpos
            judged = noisy[np.isin(noisy, np.concatenate([vpos, vneg]))]
        self.noisy_judged[judged] += 1
        self.noisy_correct[judged[np.isin(judged, ref_pos)]] += 1
        false = judged[~np.isin(judged, ref_pos)]
        self.false_given_true[np.ix_(ref_pos, false)] += 1
        self.reference_pos[ref_pos] += 1
        self.missed[ref_pos[~np.isin(ref_pos, noisy)]] += 1

    def merge(self, other: "LabelStats") -> "LabelStats":
        """Adds the counts of `other` to these and returns self.

        Merging the statistics of two groups of records equals adding all
        the records to one accumulator, so parts of a split counted apart
        (by Beam workers: `tfrecords_tools.beam_writer`) combine exactly.

        Raises:
            ValueError: `other` counts another number of classes.
        """
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge label statistics of {other.num_classes} classes into {self.num_classes} classes"
            )
        for name, value in vars(other).items():
            if name != "num_classes":
                setattr(self, name, getattr(self, name) + value)
        return self

    @staticmethod
    def _share(num: np.ndarray, den: np.ndarray) -> Optional[float]:
        den_total = int(np.sum(den))
        return float(np.sum(num)) / den_total if den_total else None

    def annotation_quality(self) -> np.ndarray:
        """Per class: share of judged noisy annotations that are correct (NaN if none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.noisy_judged > 0, self.noisy_correct / np.maximum(self.noisy_judged, 1), np.nan)

    def summary(self) -> dict[str, Any]:
        """Overall shares of false noisy annotations and of missed true labels."""
        return {
            "num_records": self.num_records,
            "records_with_truth": self.records_with_truth,
            "records_with_verified": self.records_with_verified,
            "records_without_noisy_labels": self.records_without_noisy,
            "noisy_annotations": int(self.noisy_count.sum()),
            "noisy_annotations_judged": int(self.noisy_judged.sum()),
            "false_annotation_share": self._share(self.noisy_judged - self.noisy_correct, self.noisy_judged),
            "missed_label_share": self._share(self.missed, self.reference_pos),
            "verified_positive": int(self.verified_pos.sum()),
            "verified_negative": int(self.verified_neg.sum()),
        }

    def per_class(self, class_names: Sequence[str]) -> list[dict[str, Any]]:
        quality = self.annotation_quality()
        rows = []
        for c, name in enumerate(class_names):
            rows.append(
                {
                    "index": c,
                    "name": name,
                    "noisy_count": int(self.noisy_count[c]),
                    "frequency": float(self.noisy_count[c]) / max(self.num_records, 1),
                    "annotation_quality": None if np.isnan(quality[c]) else float(quality[c]),
                    "judged": int(self.noisy_judged[c]),
                    "missed": int(self.missed[c]),
                    "reference_positive": int(self.reference_pos[c]),
                    "verified_positive": int(self.verified_pos[c]),
                    "verified_negative": int(self.verified_neg[c]),
                }
            )
        return rows

    def confusions(self, class_names: Sequence[str], top: int = 10) -> list[dict[str, Any]]:
        """The most frequent confusions: a false noisy label given on a record whose reference holds a class.

        For single-label data these are the off-diagonal cells of the noise
        transition matrix; for multi-label data a false annotation on a record
        with several true labels counts once with each of them. `share` is the
        pair's count over all judged false annotations.
        """
        false_total = int(np.sum(self.noisy_judged - self.noisy_correct))
        order = np.argsort(-self.false_given_true, axis=None, kind="stable")[:top]
        rows = []
        for flat in order:
            t, n = np.unravel_index(flat, self.false_given_true.shape)
            count = int(self.false_given_true[t, n])
            if count == 0:
                break
            rows.append({"true": class_names[t], "noisy": class_names[n], "count": count, "share": count / false_total})
        return rows


def split_stats(info: DatasetInfo, split: str) -> LabelStats:
    stats = LabelStats(info.num_classes)
    for r in iterate_label_lists(info.split_files(split)):
        stats.add(r["noisy"], r["verified_pos"], r["verified_neg"], r["true"])
    return stats
