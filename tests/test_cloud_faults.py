"""Faults of runs in the cloud: a damaged checkpoint, and a second job in a folder in use.

A run whose last checkpoint is cut short resumes from the one before, with
one warning line, and ends as the run never interrupted (`--deterministic`);
with no readable checkpoint it stops with one line. A folder holds one job
at a time: a second `nlr-train` there is refused with one line naming the
first, and the lock of a job that is gone is taken over.
"""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf
from cli_util import ROOT, run_cli
from fault_util import cut_in_half
from test_resume import _config, _start_killed_run, _wait_killed, assert_same_run

from nlr_tf.training import run_lock
from nlr_tf.training.model_dir import CheckpointError
from nlr_tf.training.trainer import train


def _messages(caplog, level) -> list[str]:
    """The project's own log lines (absl's logger) at `level`; TensorFlow's (a retracing warning) are not its."""
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == "absl"]


def _best_weights_kept(model_dir) -> set[int]:
    """The steps whose weights `best/` holds."""
    return {int(f.split(".")[0][5:]) for f in os.listdir(model_dir / "best") if f.startswith("ckpt-")}


def _bests_known(model_dir, checkpoint_steps) -> set[int]:
    """The step of the best evaluation (mAP; the earliest on ties) each checkpoint's history knows."""
    history = json.loads((model_dir / "eval_history.json").read_text())
    known = set()
    for step in checkpoint_steps:
        entries = [e for e in history if e["step"] <= step]
        if entries:
            known.add(max(entries, key=lambda e: (e["mAP"], -e["step"]))["step"])
    return known


# === A damaged checkpoint ===
def test_a_checkpoint_cut_in_half_is_skipped_and_the_run_resumes_from_the_one_before(run_dataset, tmp_path, caplog):
    """Killed right after the checkpoint of step 10, whose data file is then cut in half: the resumed run says so in
    one line, restores step 5 (best/ still holds the weights of the best evaluation its history knows) and ends as
    the uninterrupted run. With every checkpoint damaged, it stops with one line."""
    fields = dict(method="noisy", learning_rate=3e-3, eval_split="val", eval_steps=5, restore_best=True)
    config = lambda d: _config(run_dataset, tmp_path / d, train_steps=20, **fields)  # noqa: E731
    killed = _start_killed_run(config("resumed"), "checkpoint", 10)
    uninterrupted = train(config("once"))
    _wait_killed(killed, config("resumed"))
    checkpoints = tmp_path / "resumed" / "checkpoints"
    data = checkpoints / "ckpt-10.data-00000-of-00001"
    # best/ keeps the best weights each kept checkpoint (5 and 10) knows, so the run can fall back to either.
    assert _best_weights_kept(tmp_path / "resumed") == _bests_known(tmp_path / "resumed", (5, 10))
    cut_in_half(data)
    shutil.copytree(tmp_path / "resumed", tmp_path / "all_damaged")

    with caplog.at_level(logging.INFO, logger="absl"):  # absl's own level: another test may have lowered it
        resumed = train(config("resumed"))
    assert _messages(caplog, logging.WARNING) == [f"{data} is truncated or unreadable: skipping checkpoint ckpt-10"]
    assert f"resumed from {checkpoints / 'ckpt-5'} at step 5" in _messages(caplog, logging.INFO)
    assert_same_run(resumed, uninterrupted, str(tmp_path / "resumed"), str(tmp_path / "once"))
    assert resumed["restored_best"] and resumed["best_step"] == uninterrupted["best_step"]
    kept_checkpoints = [
        int(p.rsplit("-", 1)[1]) for p in tf.train.get_checkpoint_state(str(checkpoints)).all_model_checkpoint_paths
    ]
    assert _best_weights_kept(tmp_path / "resumed") == _bests_known(tmp_path / "resumed", kept_checkpoints)
    assert uninterrupted["best_step"] in _best_weights_kept(tmp_path / "resumed")

    cut_in_half(tmp_path / "all_damaged" / "checkpoints" / "ckpt-5.index")
    with pytest.raises(CheckpointError) as raised:
        train(config("all_damaged"))
    assert str(raised.value) == (
        f"no checkpoint in {tmp_path / 'all_damaged' / 'checkpoints'} reads in full (ckpt-5, ckpt-10 damaged): "
        "the run does not start over from random weights; to train from the start, use a new --model_dir"
    )
    assert not os.path.exists(tmp_path / "all_damaged" / "model.keras")


def test_max_checkpoints_keeps_at_least_two(run_dataset, tmp_path):
    proc = run_cli(
        "train", "--method=noisy", f"--dataset={run_dataset}", f"--model_dir={tmp_path}", "--max_checkpoints=1"
    )
    assert proc.returncode == 1 and "--max_checkpoints" in proc.stderr and "Traceback" not in proc.stderr


# === One job per folder ===
# nlr-train's own main, whose training waits for the file argv[1] to appear: the test knows the job is alive.
_GATED_TRAIN = """
import os, sys, time
from nlr_tf.training import trainer
real_train, gate = trainer.train, sys.argv.pop(1)

def gated_train(config, **kwargs):
    while not os.path.exists(gate):
        time.sleep(0.1)
    return real_train(config, **kwargs)

trainer.train = gated_train
from nlr_tf.cli import train
train.run()
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_nlr_train_on_a_run_folder_in_use_is_refused(run_dataset, tmp_path):
    """The first job takes over the lock of a job that is gone, the second exits at once naming the first, and the
    first ends as if alone, releasing its lock."""
    model_dir = tmp_path / "run"
    stale = dict(binary="nlr-train", host=socket.gethostname(), pid=_dead_pid(), started="earlier")
    os.makedirs(model_dir)
    (model_dir / run_lock.LOCK_FILE).write_text(json.dumps(dict(stale, heartbeat=time.time(), period=30, token="x")))
    args = [
        "--method=noisy",
        f"--dataset={run_dataset}",
        f"--model_dir={model_dir}",
        "--image_size=16",
        "--batch_size=20",
        "--train_steps=5",
        "--log_steps=5",
    ]
    gate = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    first = subprocess.Popen(
        [sys.executable, "-c", _GATED_TRAIN, str(gate), *args], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while (run_lock.read_lock(str(model_dir)) or {}).get("pid") != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, "the first job never took the folder"
            time.sleep(0.2)
        holder = run_lock.read_lock(str(model_dir))

        start = time.monotonic()
        second = run_cli("train", *args)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"nlr-train: error: {model_dir} is in use by nlr-train on host {socket.gethostname()}, process "
            f"{first.pid}, started {holder['started']} (lock file {model_dir / run_lock.LOCK_FILE}); wait for that "
            "job to end, or stop it: its lock is taken over once its heartbeat is 3 periods old"
        )
        assert time.monotonic() - start < 60
        assert first.poll() is None and run_lock.read_lock(str(model_dir))["token"] == holder["token"]
    finally:
        gate.touch()
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert (
        f"{model_dir} was locked by a job that is gone (nlr-train on host {stale['host']}, process {stale['pid']}, "
        "started earlier; its process is gone): taking it over"
    ) in stderr
    assert os.path.isfile(model_dir / "model.keras") and not os.path.exists(model_dir / run_lock.LOCK_FILE)


def test_a_lock_with_an_old_heartbeat_is_taken_over_and_a_live_one_is_not(tmp_path, caplog):
    folder = str(tmp_path)
    other = dict(binary="nlr-reproduce", host="elsewhere", pid=1, started="then", period=30, token="x")
    run_lock.files.write_json(run_lock.lock_path(folder), dict(other, heartbeat=time.time() - 1000))
    with caplog.at_level(logging.WARNING, logger="absl"), run_lock.RunLock(folder) as lock:
        assert run_lock.read_lock(folder)["pid"] == os.getpid()
    (message,) = _messages(caplog, logging.WARNING)
    assert message.startswith(
        f"{folder} was locked by a job that is gone (nlr-reproduce on host elsewhere, process 1, started then; "
        "its last heartbeat is 1000 s old, more than 90 s)"
    )
    assert lock.record is None and run_lock.read_lock(folder) is None

    # On another host, a process id says nothing: a fresh heartbeat is a live job's.
    run_lock.files.write_json(run_lock.lock_path(folder), dict(other, heartbeat=time.time() - 60))
    with pytest.raises(run_lock.FolderInUse, match="in use by nlr-reproduce on host elsewhere, process 1"):
        run_lock.RunLock(folder).acquire()

    # A job that fails at once leaves no folder behind.
    with pytest.raises(KeyError), run_lock.RunLock(str(tmp_path / "new")):
        raise KeyError("a bad flag")
    assert not os.path.exists(tmp_path / "new")


def test_the_lock_on_ram(caplog):
    """Acquire, a second acquire refused, heartbeats, release (also on an exception), on a filesystem of TF's own."""
    folder = "ram://faults/run"
    lock = run_lock.RunLock(folder, binary="nlr-compare", period=0.05).acquire()
    first = run_lock.read_lock(folder)
    assert first["host"] == socket.gethostname() and first["pid"] == os.getpid()
    with pytest.raises(run_lock.FolderInUse, match=f"^{folder} is in use by nlr-compare on host"):
        run_lock.RunLock(folder).acquire()
    deadline = time.monotonic() + 10
    while run_lock.read_lock(folder)["heartbeat"] == first["heartbeat"]:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)
    assert any(t.name == f"heartbeat {lock.path}" and t.daemon for t in threading.enumerate())
    lock.release()
    assert run_lock.read_lock(folder) is None and not tf.io.gfile.exists(lock.path)
    assert not any(t.name == f"heartbeat {lock.path}" for t in threading.enumerate())

    with pytest.raises(KeyError), run_lock.RunLock(folder):
        assert run_lock.read_lock(folder)["pid"] == os.getpid()
        raise KeyError("the job failed")
    assert run_lock.read_lock(folder) is None


@pytest.mark.parametrize(
    "tf_config, chief",
    [
        ("", True),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', True),
        ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', False),
        ('{"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief", "index": 0}}', True),
    ],
)
def test_only_the_chief_of_a_multi_worker_job_holds_the_lock(tf_config, chief, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert run_lock.chief_task() is chief
