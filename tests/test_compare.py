"""nlr-compare on a dataset converted from a manifest: the budgets, the table, the recommendation, the refusals."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import sklearn.datasets
from cli_util import ROOT, manifest_args, run_cli
from PIL import Image

from nlr_tf.reproduce import recommendation
from nlr_tf.reproduce.results import Results

CLASSES = ["zero", "one", "two", "three"]


def _manifest_dataset(root, n=240, clean_every=3, with_val=True, multi_label=True):
    """Digit scans (scikit-learn's bundled digits, classes 0-3) as a multi-label manifest: each image one digit;
    noisy labels wrong for a quarter of the images; the clean split verified on part of the classes only; class
    'three' rare."""
    digits = sklearn.datasets.load_digits()
    keep = [i for i, t in enumerate(digits.target) if t < 3][: n - 12] + [
        i for i, t in enumerate(digits.target) if t == 3
    ][:12]
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for k, i in enumerate(keep):
        label = CLASSES[digits.target[i]]
        image = np.kron(digits.images[i] * 16, np.ones((3, 3))).clip(0, 255).astype(np.uint8)
        name = f"img/{k:04d}.png"
        Image.fromarray(np.stack([image] * 3, -1)).save(root / name)
        split = ("clean" if k % clean_every == 0 else "noisy") if not with_val or k % 10 else "val"
        if with_val and k % 10 == 5:
            split = "test"
        noisy = label if rng.random() > 0.25 else CLASSES[int(rng.integers(0, 4))]
        verified = [c for c in CLASSES if rng.random() < 0.8] if split != "noisy" else []
        if split in ("val", "test"):
            verified = CLASSES
        if not multi_label:  # one verified class makes the others verified absent
            verified = [label] if label in verified else []
        rows.append(
            {
                "image": name,
                "noisy": noisy,
                "verified_pos": ";".join(c for c in verified if c == label),
                "verified_neg": ";".join(c for c in verified if c != label) if multi_label else "",
                "split": split,
                "id": f"d{k}",
            }
        )
    with open(root / "rows.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    proc = run_cli(
        "make_tfrecords",
        *manifest_args(root),
        f"--output_dir={root / 'data'}",
        "--num_shards=2",
        f"--multi_label={str(multi_label).lower()}",
    )
    assert proc.returncode == 0, proc.stderr
    return root / "data"


TINY = ("--quick", "--step_scale=0.01", "--image_size=24", "--clean_subsets=0.5,1.0", "--seeds=0,1")


def _finished_runs(out) -> int:
    return len(list((out / "runs").glob("**/eval_test/metrics.json")))


@pytest.mark.slow
def test_compare_estimates_then_writes_the_table_the_recommendation_and_the_commands(tmp_path):
    data = _manifest_dataset(tmp_path)
    out = tmp_path / "out"
    rows = "--rows=ft_last,nr_sigmoid"
    # The dry run: every row rehearsed, the plan's runs counted and timed, nothing of the comparison trained.
    proc = run_cli("compare", f"--dataset={data}", f"--output_dir={out}", rows, *TINY, "--dry_run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    estimate = json.loads((out / "dry_run.json").read_text())
    assert [r["runs"] for r in estimate["rows"]] == [2, 6, 6]  # noisy per seed; the grid's 2 rates on seed 0
    assert 0 < estimate["lower"] <= estimate["upper"] and estimate["feature_caches"] == 2
    assert "Proposed (sigmoid)" in proc.stdout and f"{estimate['runs']} runs and 2 feature cache(s)" in proc.stdout
    assert not (out / "runs").exists() and not (out / "results.md").exists()

    proc = run_cli("compare", f"--dataset={data}", f"--output_dir={out}", rows, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step cap: heads: at most 500 steps" in proc.stdout  # a tiny dataset: the lower bound, printed
    md = (out / "results.md").read_text()
    assert "`--dry_run` had estimated between" in md
    result = json.loads((out / "results.json").read_text())
    assert len(result["run_seconds"]) == estimate["runs"]
    # The budgets are nested subsets of the clean split, and say what each holds.
    budgets = result["data"]["budgets"]
    assert [b["split"] for b in budgets] == ["clean_50", "clean_100"] and budgets[0]["records"] < budgets[1]["records"]
    # The recommendation is computed from the runs it reports.
    again = recommendation.recommend(Results(result["runs"]), "multi_label")
    assert [b["leader"] for b in again["budgets"]] == [b["leader"] for b in result["recommendation"]["budgets"]]
    leader = result["recommendation"]["budgets"][-1]["leader"]
    assert "## Which method, and how many clean labels" in md and "leads (mAP" in md
    assert f"--model_dir={out / 'final' / leader}" in md and "nlr-export" in md and "nlr-clean-labels" in md
    assert {r["row"] for r in result["runs"]} == {"noisy", "ft_last", "nr_sigmoid"}
    assert (out / "regime_map.png").stat().st_size > 0
    # Each cell's precision: a bootstrap interval over the test images, from the scores its runs kept.
    assert "## Precision of the test metrics" in md and "test images drawn with replacement 200 times" in md
    assert {(i["row"], i["fraction"]) for i in result["test_intervals"]} == {
        (row, f) for row in ("noisy", "ft_last", "nr_sigmoid") for f in (0.5, 1.0)
    }
    assert all(0 <= i["low"] <= i["high"] <= 1 for i in result["test_intervals"])

    # Killed (SIGKILL) after a few runs, started again: it reuses those and ends with the same results.
    killed = tmp_path / "killed"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "nlr_tf.cli.compare", f"--dataset={data}", f"--output_dir={killed}", rows, *TINY]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _finished_runs(killed) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the comparison ended before it was killed"
    assert 3 <= _finished_runs(killed) < estimate["runs"] and not (killed / "results.md").exists()
    proc = run_cli("compare", f"--dataset={data}", f"--output_dir={killed}", rows, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("[reused") >= 3
    resumed = json.loads((killed / "results.json").read_text())
    assert resumed["aggregate"] == result["aggregate"] and resumed["recommendation"] == result["recommendation"]
    assert [r["mAP"] for r in resumed["runs"]] == [r["mAP"] for r in result["runs"]]


@pytest.mark.slow
def test_a_single_label_dataset_is_compared_in_top1_with_its_own_rows(tmp_path):
    data = _manifest_dataset(tmp_path, multi_label=False)
    out = tmp_path / "out"
    rows = "--rows=clean_only,nr_sigmoid,ft_whole"
    proc = run_cli("compare", f"--dataset={data}", f"--output_dir={out}", rows, *TINY[:-1], "--seeds=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert {r["row"] for r in result["runs"]} == {"noisy", "clean_only", "nr_sigmoid", "ft_whole"}
    assert result["recommendation"]["metric"] == "top1" and not result["recommendation"]["tested"]
    md = (out / "results.md").read_text()
    assert "## Test top1 per clean-label budget" in md and "direction at one seed" in md
    assert "--thresholds" not in md  # thresholds are for multi-label models


def test_compare_refuses_what_it_cannot_compare_in_one_line(tmp_path):
    data = _manifest_dataset(tmp_path, n=60, with_val=False)
    proc = run_cli("compare", f"--dataset={data}", f"--output_dir={tmp_path / 'o'}", *TINY)
    assert proc.returncode == 1 and "has no val split: pass --val_from_clean=F" in proc.stderr
    assert sum(line.startswith("nlr-compare:") for line in proc.stderr.splitlines()) == 1
    assert "Traceback" not in proc.stderr and not (tmp_path / "o" / "results.md").exists()
    proc = run_cli("compare", f"--dataset={data}", f"--output_dir={tmp_path / 'o'}", "--rows=ft_last,nope", *TINY)
    assert proc.returncode == 1 and "--rows: nope is no row of a multi_label comparison" in proc.stderr
    proc = run_cli("compare", f"--dataset={tmp_path / 'missing'}", f"--output_dir={tmp_path / 'o'}")
    assert proc.returncode == 1 and "dataset folder not found" in proc.stderr


def test_the_recommended_commands_train_the_row_from_its_starting_point_on_every_clean_label():
    import dataclasses

    from nlr_tf.reproduce import budgets
    from nlr_tf.reproduce.compare import final_commands
    from nlr_tf.reproduce.rows import USER_DATA

    user = budgets.UserDataset(
        path="/d/mine", variant="multi_label", clean_subsets=(0.5, 1.0), backbone_weights="imagenet"
    )
    budget = dataclasses.replace(
        budgets.FULL, benchmarks=(USER_DATA,), networks=((USER_DATA, "resnet50", 0),), fractions=(0.5, 1.0), user=user
    )
    text = final_commands("/o", budget, "nr_sigmoid", 1.0, 0.003)
    noisy, row = text.split("nlr-train")[1:]
    for flag in ("--method=noisy", "--backbone_weights=imagenet", "--model_dir=/o/final/noisy"):
        assert flag in noisy
    for flag in ("--init_checkpoint=/o/final/noisy", "--activation=sigmoid", "--learning_rate=3e-3"):
        assert flag in row
    assert "--feature_cache" not in row and "--clean_split" not in row  # images, and every clean label (`clean`)
    assert "nlr-export --model_dir=/o/final/nr_sigmoid" in text and "--thresholds" in text
    assert "nlr-clean-labels --model_dir=/o/final/nr_sigmoid --dataset=/o/data/budgets" in text
    # A row trained from the start has no starting run to train first.
    single = dataclasses.replace(budget, user=dataclasses.replace(user, variant="single_label"))
    text = final_commands("/o", single, "clean_only", 1.0, 0.001)
    assert text.count("nlr-train") == 1 and "--thresholds" not in text
