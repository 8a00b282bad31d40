"""The reproduction's ledger: finished chunks of runs carried to another output folder, and only while the plan
still has them."""

import dataclasses
import json
import os

import pytest

from nlr_tf.reproduce import budgets, datasets, ledger, plan, run_configs
from nlr_tf.reproduce.rows import VARIANTS
from nlr_tf.training import model_dir as run_files


def _finish(output_dir, run, budget, init_dir=""):
    """Writes what a finished run leaves that the ledger reads: its planned settings and its test metrics."""
    folder = run_configs.run_dir(output_dir, run)
    os.makedirs(folder, exist_ok=True)
    run_files.write_json(
        os.path.join(folder, run_configs.PLAN_FILE), run_configs.planned_settings(run, output_dir, budget, init_dir)
    )
    run_files.write_json(run_files.metrics_path(folder, "test"), {"mAP": 0.5, "seed": run.seed, "val": 0.4})
    if run.cell == plan.source_cell():
        for name in ledger.SOURCE_FILES:
            content = {"dataset": os.path.join(output_dir, "data", "glyphs")} if name.endswith(".json") else "x"
            with open(os.path.join(folder, name), "w") as f:
                f.write(json.dumps(content))


def _chunk_runs(budget, key):
    return [r for r in plan.make_plan(budget) if ledger.chunk(r) == key and r.learning_rate is not None]


def _planned(runs, output_dir, budget):
    return {r.name: ledger.comparable(run_configs.planned_settings(r, output_dir, budget)) for r in runs}


def test_a_recorded_chunk_is_restored_into_another_output_folder_with_its_paths(tmp_path):
    budget = budgets.QUICK
    first, second, book = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "ledger")
    source = [plan.source_run(budget)]
    _finish(first, source[0], budget)
    dataset = datasets.dataset_arguments(budget, "source")
    ledger.record(book, first, source, dataset, lambda n: os.path.join(first, "runs", n))
    # The files another machine needs of the source run are kept; the recorded paths name no output folder.
    assert sorted(os.listdir(os.path.join(book, ledger.SOURCE_DIR))) == sorted(ledger.SOURCE_FILES)
    assert first not in (tmp_path / "ledger" / ledger.LEDGER_FILE).read_text()

    key = ledger.chunk(source[0])
    restored = ledger.restore_chunk(
        book, second, key, _planned(source, second, budget), dataset, lambda n: os.path.join(second, "runs", n)
    )
    assert restored == 1
    folder = run_configs.run_dir(second, source[0])
    with open(os.path.join(folder, run_configs.PLAN_FILE)) as f:
        assert f.read().count(second) >= 2  # the dataset and model dir, now in the second folder
    with open(os.path.join(folder, run_files.CONFIG_FILE)) as f:
        assert json.load(f)["dataset"] == os.path.join(second, "data", "glyphs")
    assert os.path.isfile(os.path.join(folder, run_files.BACKBONE_WEIGHTS_FILE))
    with open(run_files.metrics_path(folder, "test")) as f:
        assert json.load(f)["mAP"] == 0.5
    # Restoring again writes nothing more; a chunk the ledger does not hold restores nothing.
    again = ledger.restore_chunk(
        book, second, key, _planned(source, second, budget), dataset, lambda n: os.path.join(second, "runs", n)
    )
    assert again == 0
    assert ledger.restore_chunk(book, second, "scratch/ml/seed0", {}, {}, lambda n: n) == 0


def test_a_chunk_whose_plan_changed_is_not_restored(tmp_path):
    budget = dataclasses.replace(budgets.QUICK, benchmarks=("scratch",), variants=VARIANTS)
    out, other, book = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "ledger")
    runs = _chunk_runs(budget, "scratch/sl/seed0")
    assert runs and {r.variant for r in runs} == {"single_label"}
    for run in runs:
        _finish(out, run, budget)
    dataset = datasets.dataset_arguments(budget, "single_label")
    ledger.record(book, out, runs, dataset, lambda n: os.path.join(out, "runs", n))

    def restore(b, data):
        return ledger.restore_chunk(
            book, other, "scratch/sl/seed0", _planned(runs, other, b), data, lambda n: os.path.join(other, "runs", n)
        )

    # Another step cap, or another dataset: the chunk trains again (nothing is written).
    longer = dataclasses.replace(budget, scratch=dataclasses.replace(budget.scratch, max_steps=1234))
    assert restore(longer, dataset) is None
    assert restore(budget, {**dataset, "num_train": 999}) is None
    assert not os.path.exists(os.path.join(other, "runs"))
    assert restore(budget, dataset) == len(runs)


def test_an_unreadable_ledger_is_a_clear_error(tmp_path):
    (tmp_path / ledger.LEDGER_FILE).write_text("{not json")
    with pytest.raises(ledger.LedgerError, match="cannot be read"):
        ledger.load(str(tmp_path))


def test_a_runs_random_seed_does_not_depend_on_its_place_in_the_plan():
    every = plan.make_plan(budgets.FULL)
    alone = plan.make_plan(dataclasses.replace(budgets.FULL, benchmarks=("transfer",)), ("single_label",))
    seeds = {r.name: run_configs.run_seed(r) for r in every}
    assert all(run_configs.run_seed(r) == seeds[r.name] for r in alone)
    assert len(set(seeds.values())) == len(seeds)
