"""Carrying a reproduction longer than one sitting to another machine: its finished chunks, in a small folder.

The full reproduction takes hours. An interrupted one resumes from its
output folder (finished runs are reused, a half-trained one resumes), but
the output folder (datasets, checkpoints, feature caches) is large and stays
on its machine. `--ledger=DIR` keeps, in a folder small enough to copy or
commit, what another machine needs to go on from the same plan:

- `ledger.json`: every run of each finished *chunk* (all the runs of one
  benchmark, variant and seed) with its planned settings and its metrics
  (`reproduce_run.json` and `eval_test/metrics.json`, paths written
  relative to the output folder), and the converter arguments of the
  chunk's dataset;
- `source/`: the transfer benchmark's source run (its model, config and
  backbone weights), which every later transfer run starts from and whose
  classifier compiled the transfer dataset's noisy labels.

A chunk is recorded only once every run of it has finished, so no run left
to train ever needs the model of a run restored from the ledger (whose
checkpoints are not kept): the runs of a chunk start from the chunk's own
noisy model, or from the source. Started with a ledger, the runner first
writes the files of the chunks the plan still has unchanged into the output
folder, where they are reused like any finished run: a chunk is kept only if
each of its runs has the settings the plan gives it now and its dataset the
same converter arguments; a chunk of another plan is left out, and counted,
and its runs train again.
"""

import json
import os
from typing import Any, Optional

from nlr_tf.data import files
from nlr_tf.reproduce.plan import Run, source_cell
from nlr_tf.reproduce.rows import PREMISE_ROWS, SHORT
from nlr_tf.training import model_dir as run_files

LEDGER_FILE = "ledger.json"
SOURCE_DIR = "source"
_OUT = "${OUTPUT_DIR}"
# The source run's files another machine needs: the annotator (model and config), the backbone file every
# transfer network starts from, and what the tables read.
SOURCE_FILES = (
    run_files.CONFIG_FILE,
    run_files.MODEL_FILE,
    run_files.BACKBONE_WEIGHTS_FILE,
    run_files.RESULT_FILE,
    run_files.EVAL_HISTORY_FILE,
)


class LedgerError(RuntimeError):
    """A ledger that does not belong to this plan, or cannot be read."""


def chunk(run: Run) -> str:
    """The runs of one benchmark, variant and seed (the premise investigation's, which come last, apart)."""
    return f"{run.benchmark}/{SHORT[run.variant]}/seed{run.seed}" + ("/premise" if run.row in PREMISE_ROWS else "")


_read = files.read_json


def _relative(value: Any, output_dir: str) -> Any:
    return json.loads(json.dumps(value).replace(json.dumps(files.absolute(output_dir))[1:-1], _OUT))


def _absolute(value: Any, output_dir: str) -> Any:
    return json.loads(json.dumps(value).replace(_OUT, json.dumps(files.absolute(output_dir))[1:-1]))


def _copy_source(source: str, target: str, paths) -> None:
    """Copies the source run's `SOURCE_FILES` from one folder to another, its config's paths mapped by `paths`."""
    files.makedirs(target)
    for file in SOURCE_FILES:
        if file == run_files.CONFIG_FILE:
            run_files.write_json(os.path.join(target, file), paths(_read(os.path.join(source, file))))
        else:
            files.copy(os.path.join(source, file), os.path.join(target, file))


def load(ledger_dir: str) -> dict[str, Any]:
    """The ledger in `ledger_dir` (an empty one if there is none yet)."""
    path = os.path.join(ledger_dir, LEDGER_FILE)
    if not files.isfile(path):
        return {"chunks": {}}
    try:
        return _read(path)
    except (ValueError, *files.file_errors()) as e:
        raise LedgerError(f"{path} cannot be read: {e}") from None


# A run's starting point is named by the folder of the run it starts from, whose name holds that run's chosen
# learning rate; that run is compared in its own right, so the path is left out of the comparison.
_INIT_FIELDS = ("init_checkpoint", "backbone_weights")


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """A run's planned settings without the paths of the runs it starts from (compared on their own)."""
    return {k: v for k, v in settings.items() if k not in _INIT_FIELDS}


def restore_chunk(
    ledger_dir: str, output_dir: str, key: str, planned: dict[str, dict], dataset: dict[str, Any], run_dir
) -> Optional[int]:
    """Writes one recorded chunk's files into the output folder if the plan still has it unchanged.

    Args:
        key: str. The chunk (`chunk(run)`).
        planned: dict. Each run's planned settings (`comparable`), by run name.
        dataset: dict. The converter arguments of the chunk's dataset.
        run_dir: function of a run name to its folder in `output_dir`.

    Returns:
        How many runs were restored; None if the ledger holds the chunk with
        other settings (or not in full), and 0 if it does not hold it.
    """
    recorded = load(ledger_dir)["chunks"].get(key)
    if recorded is None:
        return 0
    runs = {name: _absolute(entry["plan"], output_dir) for name, entry in recorded["runs"].items()}
    if recorded.get("dataset") != dataset or {n: comparable(p) for n, p in runs.items()} != planned:
        return None
    count = 0
    for name, entry in recorded["runs"].items():
        folder = run_dir(name)
        metrics_path = run_files.metrics_path(folder, "test")
        if files.isfile(metrics_path):
            continue
        files.makedirs(os.path.dirname(metrics_path))
        run_files.write_json(os.path.join(folder, "reproduce_run.json"), runs[name])
        if name.startswith(source_cell() + "/"):
            _copy_source(os.path.join(ledger_dir, SOURCE_DIR), folder, lambda config: _absolute(config, output_dir))
        run_files.write_json(metrics_path, entry["metrics"])
        count += 1
    return count


def record(ledger_dir: str, output_dir: str, runs: list[Run], dataset: dict[str, Any], run_dir) -> None:
    """Adds one finished chunk's runs (and the source run's files) to the ledger, with its dataset's arguments."""
    ledger = load(ledger_dir)
    entries = {}
    for run in runs:
        folder = run_dir(run.name)
        entries[run.name] = {
            "plan": _relative(_read(os.path.join(folder, "reproduce_run.json")), output_dir),
            "metrics": _read(run_files.metrics_path(folder, "test")),
        }
        if run.cell == source_cell():
            _copy_source(folder, os.path.join(ledger_dir, SOURCE_DIR), lambda config: _relative(config, output_dir))
    ledger["chunks"][chunk(runs[0])] = {"dataset": dataset, "runs": entries}
    files.write_text(os.path.join(ledger_dir, LEDGER_FILE), json.dumps(ledger, indent=0, sort_keys=True))
