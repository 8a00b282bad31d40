"""A preemption notice (SIGTERM) stops nlr-compare, nlr-reproduce, nlr-extract-features and nlr-make-tfrecords
cleanly.

Each binary runs as a real subprocess, its own `run()` started by a short
script that first installs a hook: a pause at a point the test waits for
(a training step logged, a feature cache being written, an image being
read, a Beam bundle done). The test sends a real SIGTERM there and checks
what is left: status 75, one line, no results (or dataset.json) that look
complete, the run lock released, no child process left; then the same
command goes on to what an uninterrupted invocation gives.
"""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import tensorflow as tf
from cli_util import ROOT, manifest_args, run_cli
from fault_util import nothing_written
from test_compare import _manifest_dataset

from nlr_tf.training import preemption

RESUME = "run the same command to resume"

# The binary argv[1] (a module of nlr_tf.cli) with a hook installed first; argv[2] names the hook, the rest are
# the hook's arguments (ready file, gate file, step) and then the binary's flags.
_HOOKED = """
import os, sys, time
module, hook = sys.argv.pop(1), sys.argv.pop(1)

def wait_for(gate):
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)

if hook == "step":  # the first training pauses right after logging step `at`, until the gate file exists
    from nlr_tf.training import trainer
    ready, gate, at = sys.argv.pop(1), sys.argv.pop(1), int(sys.argv.pop(1))
    write_logs, paused = trainer._write_logs, []

    def hooked(writer, model, config, current, logs):
        write_logs(writer, model, config, current, logs)
        if current == at and not paused:
            paused.append(current)
            open(ready, "w").close()
            wait_for(gate)

    trainer._write_logs = hooked
elif hook == "features":  # a feature cache is being written: the SIGTERM raises in the sleep
    from nlr_tf.data import feature_cache
    ready = sys.argv.pop(1)
    write_split = feature_cache._write_split

    def hooked(*args, **kwargs):
        open(ready, "w").close()
        time.sleep(120)
        return write_split(*args, **kwargs)

    feature_cache._write_split = hooked
elif hook == "slow_images":  # every image takes 0.2 s to read (in the writer's threads); the first touches ready
    from tfrecords_tools import writer
    ready = sys.argv.pop(1)
    prepare = writer.prepare_record

    def hooked(*args):
        open(ready, "a").close()
        time.sleep(0.2)
        return prepare(*args)

    writer.prepare_record = hooked
elif hook == "beam_bundle":  # after the first bundle (the worker processes up), the launcher pauses
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    ready = sys.argv.pop(1)
    execute = fn_runner.FnApiRunner._execute_bundle

    def hooked(self, *args, **kwargs):
        result = execute(self, *args, **kwargs)
        if not os.path.exists(ready):
            open(ready, "w").close()
            time.sleep(120)
        return result

    fn_runner.FnApiRunner._execute_bundle = hooked
import importlib
importlib.import_module(f"nlr_tf.cli.{module}").run()
"""


def _start(module: str, hook: str, *args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        [sys.executable, "-c", _HOOKED, module, hook, *map(str, args)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path, proc, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"it ended before {what}: {proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def _sigterm(proc: subprocess.Popen) -> list[psutil.Process]:
    """Sends `proc` a SIGTERM; returns the processes it had started (and they started)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    return children


def _ended(proc: subprocess.Popen, children=()) -> tuple[str, str]:
    """The stdout and stderr of `proc`, ended on its own with status 75 leaving no child process alive."""
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == preemption.PREEMPTED_STATUS == 75, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"
    return stdout, stderr


def _last_line(stdout: str) -> str:
    return stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """test_compare's digit scans: the manifest (rows.csv, classes.txt, img/) and its dataset, data/."""
    root = tmp_path_factory.mktemp("digits")
    _manifest_dataset(root)
    return root


# test_compare's smallest comparison, on one row, one seed and one budget: noisy (5 steps, logged at 2, 4, 5),
# its feature cache, then two ft_last runs (the rate grid).
TINY = ("--rows=ft_last", "--quick", "--step_scale=0.01", "--image_size=24", "--clean_subsets=1.0", "--seeds=0")
NOISY = "data/ml/seed0/shared/noisy/lr0.001"


def _compare(manifest, out) -> list[str]:
    return [f"--dataset={manifest / 'data'}", f"--output_dir={out}", *TINY]


def test_nlr_compare_stops_in_training_and_resumes_to_the_results_never_interrupted(manifest, tmp_path):
    once = run_cli("compare", *_compare(manifest, tmp_path / "once"))
    assert once.returncode == 0, once.stderr[-3000:]
    out = tmp_path / "out"

    # In the noisy run's training, after step 2 (between its checkpoints): that step is checkpointed.
    ready, gate = tmp_path / "ready", tmp_path / "gate"
    proc = _start("compare", "step", ready, gate, 2, *_compare(manifest, out))
    try:
        _wait_for(ready, proc, "reached step 2")
        children = _sigterm(proc)
        time.sleep(0.5)  # the handler only sets the flag while the hook waits
    finally:
        gate.touch()
    stdout, _ = _ended(proc, children)
    assert _last_line(stdout) == f"nlr-compare: preempted at step 2 of run {NOISY}: checkpoint saved; {RESUME}"
    noisy = out / "runs" / NOISY
    assert os.path.basename(tf.train.latest_checkpoint(str(noisy / "checkpoints"))) == "ckpt-2"
    assert not (noisy / "eval_test" / "metrics.json").exists() and not (noisy / "model.keras").exists()
    assert not (out / "results.md").exists() and not (out / "results.json").exists()
    assert not (out / "job.lock").exists()

    # The same command resumes the noisy run and finishes: the results of the comparison never interrupted.
    proc = run_cli("compare", *_compare(manifest, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected, resumed = (json.loads((d / "results.json").read_text()) for d in (tmp_path / "once", out))
    assert resumed["aggregate"] == expected["aggregate"] and resumed["recommendation"] == expected["recommendation"]
    assert [(r["row"], r["mAP"], r["APall"], r["val"], r["best_step"]) for r in resumed["runs"]] == [
        (r["row"], r["mAP"], r["APall"], r["val"], r["best_step"]) for r in expected["runs"]
    ]


# test_reproduce's tiny reproduction, its scratch benchmark only: the noisy run first (20 steps, logged at 10 and
# 20), GT, then a logistic regression on the noisy model's feature cache.
REPRODUCE = (
    "--quick",
    "--step_scale=0.02",
    "--num_train=300",
    "--num_val=50",
    "--num_test=100",
    "--benchmarks=scratch",
)
REPRODUCE_NOISY = "scratch/ml/seed0/shared/noisy/lr0.001"
REPRODUCE_GT = "scratch/ml/seed0/shared/gt/lr0.001"
REPRODUCE_LOGREG = "scratch/ml/seed0/shared/logreg_noisy"


def test_nlr_reproduce_stops_in_training_then_in_feature_extraction_and_goes_on(tmp_path):
    """Its runs do not train `--deterministic`: the resumed run is checked to take up the step and evaluations it
    saved, not to match an uninterrupted run's weights (nlr-compare's test does that)."""
    out, ready, gate = tmp_path / "out", tmp_path / "ready", tmp_path / "gate"
    # 1. In the noisy run's training, after step 10 (its checkpoints are at 20): step 10 is checkpointed.
    proc = _start("reproduce", "step", ready, gate, 10, f"--output_dir={out}", *REPRODUCE)
    try:
        _wait_for(ready, proc, "reached step 10")
        children = _sigterm(proc)
        time.sleep(0.5)
    finally:
        gate.touch()
    stdout, _ = _ended(proc, children)
    line = f"nlr-reproduce: preempted at step 10 of run {REPRODUCE_NOISY}: checkpoint saved; {RESUME}"
    assert _last_line(stdout) == line
    noisy = out / "runs" / REPRODUCE_NOISY
    assert os.path.basename(tf.train.latest_checkpoint(str(noisy / "checkpoints"))) == "ckpt-10"
    saved = json.loads((noisy / "eval_history.json").read_text())
    assert [e["step"] for e in saved] == [10]
    assert not (noisy / "eval_test").exists() and not (noisy / "model.keras").exists()
    assert not (out / "results.md").exists() and not (out / "results.json").exists()
    assert not (out / "job.lock").exists()

    # 2. The same command resumes the noisy run from step 10 and finishes it, trains GT; a SIGTERM while the
    # logistic-regression row's feature cache is written stops at once, the cache's temporary folder removed.
    ready = tmp_path / "ready_features"
    proc = _start("reproduce", "features", ready, f"--output_dir={out}", *REPRODUCE)
    _wait_for(ready, proc, "began the feature cache")
    assert any(".incomplete-" in p.name for p in (out / "runs").rglob("*"))  # its temporary folder
    stdout, _ = _ended(proc, _sigterm(proc))
    assert _last_line(stdout) == f"nlr-reproduce: preempted in run {REPRODUCE_LOGREG}: finished runs kept; {RESUME}"
    assert "Backbone (Noisy), lr 0.001: val" in stdout and "[reused" not in stdout  # finished here
    history = json.loads((noisy / "eval_test" / "metrics.json").read_text())["eval_history"]
    assert history[0] == saved[0] and [e["step"] for e in history] == [10, 20]
    assert (out / "runs" / REPRODUCE_GT / "eval_test" / "metrics.json").exists()
    assert not any(".incomplete-" in p.name for p in out.rglob("*"))
    assert not (out / "runs" / REPRODUCE_LOGREG / "eval_test").exists()
    assert not (out / "results.json").exists() and not (out / "job.lock").exists()


def _records(path) -> dict[str, list[bytes]]:
    info = json.loads((path / "dataset.json").read_text())
    return {
        split: sorted(r.numpy() for r in tf.data.TFRecordDataset(sorted(str(p) for p in path.glob(f"{split}-*"))))
        for split in info["splits"]
    }


def _make_tfrecords(manifest, out, *extra) -> list[str]:
    """The conversion of `manifest` fixture's dataset, data/ (see test_compare), into `out`."""
    return [*manifest_args(manifest), f"--output_dir={out}", "--num_shards=2", "--multi_label=true", *extra]


def test_nlr_extract_features_stops_leaving_no_folder(run_dataset, tmp_path):
    model_dir, features, ready = tmp_path / "noisy", tmp_path / "features", tmp_path / "ready"
    trained = run_cli(
        "train", "--method=noisy", f"--dataset={run_dataset}", f"--model_dir={model_dir}", "--train_steps=1"
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    args = [f"--model_dir={model_dir}", f"--dataset={run_dataset}", f"--output_dir={features}", "--quiet"]
    proc = _start("extract_features", "features", ready, *args)
    _wait_for(ready, proc, "started extracting")
    assert any(name.startswith(".features.") for name in os.listdir(tmp_path))  # its temporary folder
    stdout, _ = _ended(proc, _sigterm(proc))
    assert (
        _last_line(stdout) == "nlr-extract-features: preempted: stopped, no output written; run the same command again"
    )
    assert not any(name == "features" or name.startswith(".features.") for name in os.listdir(tmp_path))


def test_nlr_make_tfrecords_stops_its_threads_and_leaves_no_folder_then_converts_again(manifest, tmp_path):
    out, ready = tmp_path / "converted", tmp_path / "ready"
    proc = _start("make_tfrecords", "slow_images", ready, *_make_tfrecords(manifest, out, "--num_workers=2", "--quiet"))
    _wait_for(ready, proc, "read an image")
    assert any(name.startswith(".converted.incomplete-") for name in os.listdir(tmp_path))
    sent = time.monotonic()
    stdout, _ = _ended(proc, _sigterm(proc))
    assert time.monotonic() - sent < 15  # the 240 images would take 24 s: the pending ones were cancelled
    assert _last_line(stdout) == "nlr-make-tfrecords: preempted: stopped, no output written; run the same command again"
    assert nothing_written(out)

    proc = run_cli("make_tfrecords", *_make_tfrecords(manifest, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _records(out) == _records(manifest / "data")


def test_nlr_make_tfrecords_under_beam_stops_its_worker_processes(manifest, tmp_path):
    out, ready = tmp_path / "converted", tmp_path / "ready"
    options = "--beam_options=--direct_num_workers=2 --direct_running_mode=multi_processing"
    proc = _start(
        "make_tfrecords", "beam_bundle", ready, *_make_tfrecords(manifest, out, "--runner=DirectRunner"), options
    )
    _wait_for(ready, proc, "ran a Beam bundle")
    children = psutil.Process(proc.pid).children(recursive=True)
    workers = [c for c in children if c.cmdline()[-1:] == ["apache_beam.runners.worker.sdk_worker_main"]]
    assert len(workers) == 2, workers  # --direct_num_workers=2
    stdout, _ = _ended(proc, _sigterm(proc))
    assert _last_line(stdout) == "nlr-make-tfrecords: preempted: stopped, no output written; run the same command again"
    assert nothing_written(out)
