"""A dataset's clean split cut into nested clean-label budgets, written as a dataset folder of its own."""

import json
import os

import numpy as np
import pytest
from conftest import write_toy_dataset

from nlr_tf.data import clean_budgets, parsing
from nlr_tf.data.schema import load_dataset_info


def _ids(info, split):
    return [r["id"] for r in parsing.iterate_label_lists(info.split_files(split))]


def test_budgets_are_nested_splits_and_the_other_splits_stay_where_they_are(tmp_path):
    source, _ = write_toy_dataset(
        tmp_path / "src", {"noisy": 30, "clean": 80, "val": 12, "test": 12}, verify_share=0.7
    )
    info, report = clean_budgets.write_clean_budgets(source.path, str(tmp_path / "out"), (0.25, 0.1, 1.0), seed=1)
    assert [b["split"] for b in report["budgets"]] == ["clean_10", "clean_25", "clean_100"]
    assert [info.splits[b].num_records for b in ("clean_10", "clean_25", "clean_100", "clean")] == [8, 20, 80, 80]
    small, large, every = (set(_ids(info, s)) for s in ("clean_10", "clean_25", "clean_100"))
    assert small <= large <= every == set(_ids(source, "clean"))
    for split in ("noisy", "val", "test"):  # links to the source's shards, named inside the folder as in any dataset
        assert [os.path.realpath(f) for f in info.split_files(split)] == source.split_files(split)
        assert all(os.path.dirname(f) == info.path for f in info.split_files(split))
    # The subsets' records are the source's records, labels and all.
    mine = {r["id"]: r for r in parsing.iterate_label_lists(info.split_files("clean_25"))}
    theirs = {r["id"]: r for r in parsing.iterate_label_lists(source.split_files("clean"))}
    assert all(mine[i] == theirs[i] for i in mine)
    saved = json.loads((tmp_path / "out" / "dataset.json").read_text())["provenance"]
    assert saved["derived_from"] == source.path and saved["clean_budgets"] == json.loads(json.dumps(report))
    # Seeded: the same seed, the same budgets.
    again, _ = clean_budgets.write_clean_budgets(source.path, str(tmp_path / "again"), (0.25,), seed=1)
    assert set(_ids(again, "clean_25")) == large


def test_val_and_test_set_aside_from_the_clean_split_when_the_dataset_has_none(tmp_path):
    source, _ = write_toy_dataset(tmp_path / "src", {"noisy": 20, "clean": 100})
    with pytest.raises(clean_budgets.CleanBudgetError, match="has no val split: pass --val_from_clean=F"):
        clean_budgets.write_clean_budgets(source.path, str(tmp_path / "x"), (0.5,))
    with pytest.raises(clean_budgets.CleanBudgetError, match="has no test split: pass --test_from_clean=F"):
        clean_budgets.write_clean_budgets(source.path, str(tmp_path / "x"), (0.5,), val_from_clean=0.2)
    assert not (tmp_path / "x").exists()
    info, report = clean_budgets.write_clean_budgets(
        source.path, str(tmp_path / "out"), (0.5, 1.0), val_from_clean=0.2, test_from_clean=0.1
    )
    val, test, pool = (set(_ids(info, s)) for s in ("val", "test", "clean_100"))
    assert (len(val), len(test), len(pool)) == (20, 10, 70)
    assert not val & test and not (val | test) & pool
    assert val | test | pool == set(_ids(source, "clean"))
    set_aside = {"val": {"share": 0.2, "records": 20}, "test": {"share": 0.1, "records": 10}}
    assert report["set_aside_from_clean"] == set_aside


def test_each_missing_part_is_refused_in_one_line(tmp_path):
    no_clean, _ = write_toy_dataset(tmp_path / "a", {"noisy": 20, "val": 5, "test": 5})
    with pytest.raises(clean_budgets.CleanBudgetError, match="has no clean split"):
        clean_budgets.write_clean_budgets(no_clean.path, str(tmp_path / "x"), (0.5,))
    unverified, _ = write_toy_dataset(tmp_path / "b", {"noisy": 20, "clean": 10, "val": 5, "test": 5}, verify_share=0)
    with pytest.raises(clean_budgets.CleanBudgetError, match="val split .* has no verified labels"):
        clean_budgets.write_clean_budgets(unverified.path, str(tmp_path / "x"), (0.5,))
    with pytest.raises(clean_budgets.CleanBudgetError, match="clean split .* has no verified positive of any class"):
        clean_budgets.write_clean_budgets(unverified.path, str(tmp_path / "x"), (0.5,), val_from_clean=0.2)
    with pytest.raises(ValueError, match="fraction in"):
        clean_budgets.write_clean_budgets(unverified.path, str(tmp_path / "x"), (1.5,), val_from_clean=0.2)
    assert not (tmp_path / "x").exists()


def test_a_budget_that_leaves_a_class_without_a_verified_positive_says_which(tmp_path):
    source, records = write_toy_dataset(tmp_path / "src", {"noisy": 10, "clean": 60, "val": 5, "test": 5})
    info, report = clean_budgets.write_clean_budgets(source.path, str(tmp_path / "out"), (0.02, 1.0))
    labels = parsing.label_arrays(info.split_files("clean_02"), info.num_classes)
    missing = np.flatnonzero(~(labels["verified_labels"] * labels["verified_mask"]).any(0))
    assert report["budgets"][0]["classes_without_verified_positive"] == [info.class_names[j] for j in missing]
    assert missing.size and report["budgets"][1]["classes_without_verified_positive"] == []
    assert load_dataset_info(str(tmp_path / "out")).splits["clean_02"].num_records == 1
