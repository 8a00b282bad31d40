"""What makes the committed evidence the code's own: the plan's fingerprint and the code version.

The fingerprint hashes everything a reproduction trains: every run's
rendered `nlr-train` arguments (or its rotation pretraining's, or its
logistic-regression fit's), in plan order, and every dataset's converter
arguments. Paths are rendered relative to the output folder, so the
fingerprint does not depend on where the reproduction runs. A rate the plan
leaves to the grid seeds' choice is rendered as "chosen". A change of the
code that alters what any row trains (a step cap, a grid, a row, a
dataset's size) changes the fingerprint; `results.json` records it, and a
test compares the committed evidence's with the code's.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
from typing import Any, Optional

from nlr_tf.reproduce.budgets import Budget
from nlr_tf.reproduce.datasets import dataset_arguments
from nlr_tf.reproduce.plan import make_plan
from nlr_tf.reproduce.run_configs import planned_settings

_OUT = "OUTPUT_DIR"


def _rendered(run, budget: Budget) -> dict[str, Any]:
    chosen = run.learning_rate is None and run.row.stage != "reference"
    if chosen:  # the grid seeds' choice, known only once they have run
        run = dataclasses.replace(run, learning_rate=1.0)
    init_dir = os.path.join(_OUT, "runs", run.init) if run.init else ""
    settings = planned_settings(run, _OUT, budget, init_dir)
    if run.row.stage == "reference":
        settings["C"] = list(budget.reference_c)
    if chosen:
        for field, _ in run.row.lr_fields:
            settings[field] = "chosen"
    return settings


def plan_fingerprint(budget: Budget, variants) -> str:
    """A sha256 over the plan's runs (in order) and its datasets' converter arguments."""
    runs = make_plan(budget, variants)
    datasets = sorted({(r.variant, r.benchmark) for r in runs if r.row.stage != "reference"})
    content = {
        "runs": [[run.name, _rendered(run, budget)] for run in runs],
        "datasets": [[v, b, dataset_arguments(budget, v, b)] for v, b in datasets],
        # How a cell's learning rate is chosen, and on which seeds.
        "grid_seeds": list(budget.grid_seeds),
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def code_version(path: Optional[str] = None) -> dict[str, Any]:
    """The commit the code was run from and whether its tree had uncommitted changes (None outside git)."""
    path = path or os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> Optional[str]:
        try:
            return subprocess.run(
                ["git", *args], cwd=path, capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "clean_tree": None if status is None else status == ""}
