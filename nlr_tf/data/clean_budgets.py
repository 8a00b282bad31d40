"""A dataset's clean split cut into nested clean-label budgets (Hu Table 3), as a dataset folder of its own.

`write_clean_budgets` reads a converted dataset and writes a folder whose
`dataset.json` holds one split per budget (`clean_10`, `clean_25`, ... for
fractions 0.1, 0.25, ...: nested, seeded, stratified by class, see
`subsets`), `clean` (the whole clean pool), and the source's other splits,
whose shards are symbolic links to the source's on a local disk (nothing
large is copied; copies on other filesystems). Where the
source has no `val` or `test`, seeded disjoint shares of its clean split
become them (`val_from_clean`, `test_from_clean`), and the budgets are cut
from what remains. Only the clean split's records are read and written,
streamed (an image is never decoded or held in memory with the others).

Refusals are one line each (`CleanBudgetError`): no clean split, no `val`
or `test` (and no share asked for), no verified labels in `val`, no
verified positive of any class in the clean split.
"""

import os
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from nlr_tf.data import subsets
from nlr_tf.data.output_dir import atomic_output_dir
from nlr_tf.data.parsing import label_arrays
from nlr_tf.data.schema import DatasetInfo, SplitInfo, load_dataset_info, shard_name

RECORDS_PER_SHARD = 5000


class CleanBudgetError(ValueError):
    """A dataset that cannot be cut into clean-label budgets."""


def _check(info: DatasetInfo, val_from_clean: float, test_from_clean: float) -> None:
    if not info.has_split("clean"):
        raise CleanBudgetError(f"dataset {info.path!r} has no clean split (the images with verified labels)")
    for split, share in (("val", val_from_clean), ("test", test_from_clean)):
        flag = f"--{split}_from_clean"
        if not share and not info.has_split(split):
            raise CleanBudgetError(
                f"dataset {info.path!r} has no {split} split: pass {flag}=F to set aside a share F of its clean split"
            )
    if not val_from_clean:
        val = label_arrays(info.split_files("val"), info.num_classes)
        if not val["verified_mask"].any():
            raise CleanBudgetError(
                f"the val split of {info.path!r} has no verified labels to choose on: pass --val_from_clean=F"
            )


def _write_shards(files: Sequence[str], directory: str, members: dict[str, np.ndarray]) -> dict[str, SplitInfo]:
    """Streams the records of `files` into the shards of each split of `members` (split -> sorted indices)."""
    writers, shards, counts = {}, {}, {}
    for split, indices in members.items():
        total = max(1, -(-len(indices) // RECORDS_PER_SHARD))
        shards[split] = [shard_name(split, i, total) for i in range(total)]
        counts[split] = 0
    where: dict[int, list[str]] = {}
    for split, indices in members.items():
        for i in indices:
            where.setdefault(int(i), []).append(split)
    try:
        for i, record in enumerate(tf.data.TFRecordDataset(list(files)).as_numpy_iterator()):
            for split in where.get(i, ()):
                k = counts[split] % len(shards[split])
                key = (split, k)
                if key not in writers:
                    writers[key] = tf.io.TFRecordWriter(os.path.join(directory, shards[split][k]))
                writers[key].write(record)
                counts[split] += 1
    finally:
        for w in writers.values():
            w.close()
    return {s: SplitInfo(num_records=len(members[s]), num_shards=len(shards[s]), files=shards[s]) for s in members}


def describe(report: dict[str, Any]) -> list[str]:
    """One line per budget and per share set aside, from `write_clean_budgets`' report (printed and in results)."""
    lines = []
    for b in report.get("budgets", []):
        missing = b["classes_without_verified_positive"]
        lines.append(
            f"budget {100 * b['fraction']:g} % of the clean set: {b['records']} images"
            + (f"; no verified positive of {', '.join(missing)} (left out of its mean)" if missing else "")
        )
    for split, share in report.get("set_aside_from_clean", {}).items():
        lines.append(
            f"{split}: {share['records']} images set aside from the clean split ({100 * share['share']:g} %), "
            "disjoint from every budget"
        )
    return lines


def _link_or_copy(source: str, target: str) -> None:
    """A shard of the source dataset inside the budgets' folder: a symbolic link on a local disk (nothing large is
    copied), a copy on any other filesystem. The folder's shards keep their names inside it, as every dataset's
    do, so a writer that joins a shard's name to its own output folder never reaches the source's files."""
    if "://" in source:
        tf.io.gfile.copy(source, target)
    else:
        os.symlink(os.path.abspath(source), target)


def write_clean_budgets(
    dataset: str,
    output_dir: str,
    fractions: Sequence[float],
    *,
    seed: int = 0,
    val_from_clean: float = 0.0,
    test_from_clean: float = 0.0,
    overwrite: bool = False,
    provenance: Optional[dict[str, Any]] = None,
) -> tuple[DatasetInfo, dict[str, Any]]:
    """Writes the budgets' dataset folder (see the module docstring).

    `provenance`: further entries for its provenance (the caller's arguments).

    Returns:
        (its `DatasetInfo`, the report recorded in its provenance under
        `clean_budgets`: each budget's records and the classes it leaves
        without a verified positive, and the shares set aside).
    """
    info = load_dataset_info(dataset)
    _check(info, val_from_clean, test_from_clean)
    fractions = sorted(set(float(f) for f in fractions))
    for f in fractions:
        subsets.subset_size(f, 1)  # refuses a fraction outside (0, 1]
    files = info.split_files("clean")
    clean = label_arrays(files, info.num_classes)
    labels, mask = clean["verified_labels"], clean["verified_mask"]
    if not (labels * mask).any():
        raise CleanBudgetError(f"the clean split of {info.path!r} has no verified positive of any class")
    shares = [s for s in (val_from_clean, test_from_clean) if s]
    pool, taken = subsets.split_shares(labels, mask, shares, seed=seed) if shares else (np.arange(len(labels)), [])
    members: dict[str, np.ndarray] = {}
    set_aside = {}
    for split, share in (("val", val_from_clean), ("test", test_from_clean)):
        if share:
            members[split] = taken.pop(0)
            set_aside[split] = {"share": share, "records": len(members[split])}
    order = subsets.stratified_order(labels[pool], mask[pool], seed=seed)
    report: dict[str, Any] = {"seed": seed, "pool": len(pool), "set_aside_from_clean": set_aside, "budgets": []}
    for f in fractions:
        chosen = np.sort(pool[order[: subsets.subset_size(f, len(pool))]])
        members[subsets.nested_split_name(f)] = chosen
        missing = subsets.classes_without_positive(labels, mask, chosen)
        report["budgets"].append(
            {
                "fraction": f,
                "split": subsets.nested_split_name(f),
                "records": len(chosen),
                "classes_without_verified_positive": [info.class_names[j] for j in missing],
            }
        )
    members["clean"] = np.sort(pool)
    with atomic_output_dir(output_dir, overwrite=overwrite) as tmp:
        written = _write_shards(files, tmp, members)
        splits = {name: s for name, s in info.splits.items() if name != "clean" and name not in written}
        for s in splits.values():
            for f in s.files:
                _link_or_copy(os.path.join(info.path, f), os.path.join(tmp, f))
        splits.update(written)
        out = DatasetInfo(
            num_classes=info.num_classes,
            multi_label=info.multi_label,
            splits=splits,
            classes=info.classes,
            provenance={**info.provenance, "derived_from": info.path, "clean_budgets": report, **(provenance or {})},
            skipped=info.skipped,
        )
        out.write(tmp)
    return load_dataset_info(output_dir), report
