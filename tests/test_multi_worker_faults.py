"""Faults of a multi-worker job, driven for real: two `nlr-train` worker processes on localhost.

- A preemption notice (SIGTERM) to one worker: every worker checkpoints the
  step TensorFlow's PreemptionCheckpointHandler makes them agree on and
  exits with `PREEMPTED_STATUS`; starting both again ends as the job never
  interrupted.
- A lost worker (SIGKILL): the other stops with one line within the bound
  the README states; starting both again ends as the job never interrupted.

Worker 1 is paused, by a hook, right after logging step 7 (between ckpt-5 and
ckpt-10, after the evaluation of step 4), where the fault is dealt to it.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from cli_util import ROOT
from test_distribution import _free_ports
from test_preemption import _PAUSED_TRAIN  # nlr-train's main, paused after a step until a file appears
from test_preemption import _args as _one_process_args
from test_resume import assert_same_run

from nlr_tf.training import model_dir as run_files
from nlr_tf.training import preemption

pytestmark = pytest.mark.slow

# The README's bound: the workers left stop within this many seconds of losing one (a guard against hanging on a
# collective op, not a speed target).
LOST_WORKER_BOUND_SECONDS = 60

_AT = 7


def _args(run_dataset, model_dir) -> list[str]:
    """The single-process preemption test's run (16 steps, logged every 2, checkpointed every 5, evaluated every 4),
    on two workers."""
    return [*_one_process_args(run_dataset, model_dir), "--strategy=multi_worker_mirrored"]


def _start(run_dataset, model_dir, tmp_path=None) -> list[subprocess.Popen]:
    """Both workers of the job; with `tmp_path`, worker 1 pauses after step 7 (tmp_path/ready, until tmp_path/go)."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
        if tmp_path is not None and index == 1:
            cmd = [sys.executable, "-c", _PAUSED_TRAIN, str(tmp_path / "ready"), str(tmp_path / "go"), str(_AT)]
        else:
            cmd = [sys.executable, "-m", "nlr_tf.cli.train"]
        procs.append(
            subprocess.Popen(
                cmd + _args(run_dataset, model_dir),
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def _finish(procs, timeout=400) -> list[tuple[int, str, str]]:
    """(status, stdout, stderr) of each worker; every one killed if one does not end in time."""
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return outputs


def _wait_for(path, procs) -> None:
    deadline = time.monotonic() + 300
    while not path.exists():
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, "the job never reached step 7"
        time.sleep(0.1)


def _result(model_dir) -> dict:
    with open(os.path.join(model_dir, run_files.RESULT_FILE)) as f:
        return json.load(f)


def _completes_as_uninterrupted(run_dataset, model_dir, reference) -> None:
    """Both workers started again with the same command end as the job never interrupted."""
    outputs = _finish(_start(run_dataset, model_dir))
    for status, out, err in outputs:
        assert status == 0, err[-3000:]
        assert "trained noisy for 16 steps" in out
    checksums = {line for _, out, _ in outputs for line in out.splitlines() if line.startswith("weights checksum:")}
    assert len(checksums) == 1  # the workers agree
    # Every variable but the count of checkpoints saved (an interrupted job saved another).
    assert_same_run(
        _result(model_dir),
        _result(reference),
        str(model_dir),
        str(reference),
        not_compared=("save_counter/.ATTRIBUTES/VARIABLE_VALUE",),
    )
    assert not (model_dir / ".workers").exists() or not os.listdir(model_dir / ".workers")
    assert not (model_dir / "job.lock").exists()


@pytest.fixture(scope="module")
def reference(run_dataset, tmp_path_factory):
    """The job never interrupted."""
    model_dir = tmp_path_factory.mktemp("reference") / "run"
    for status, _, err in _finish(_start(run_dataset, model_dir)):
        assert status == 0, err[-3000:]
    return model_dir


def test_a_preemption_notice_to_one_worker_checkpoints_every_worker_and_the_same_command_resumes(
    run_dataset, reference, tmp_path
):
    model_dir = tmp_path / "run"
    procs = _start(run_dataset, model_dir, tmp_path)
    try:
        _wait_for(tmp_path / "ready", procs)
        procs[1].send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the handler runs while the hook sleeps
    finally:
        (tmp_path / "go").touch()
    outputs = _finish(procs, timeout=120)

    # They agree on the boundary after the next (7 -> 8), and both checkpoint it.
    saved = _AT + 1
    for status, out, err in outputs:
        assert status == preemption.PREEMPTED_STATUS, err[-3000:]
        assert "Traceback" not in err
        assert out.strip().splitlines()[-1] == (
            f"nlr-train: preempted at step {saved}: checkpoint saved; run the same command to resume"
        )
    checkpoints = model_dir / "checkpoints"
    assert (checkpoints / f"ckpt-{saved}.index").exists() and (checkpoints / "ckpt-5.index").exists()
    assert json.loads((model_dir / "eval_history.json").read_text())[-1]["step"] == 8
    assert not (model_dir / run_files.MODEL_FILE).exists()
    assert not (model_dir / "job.lock").exists()

    _completes_as_uninterrupted(run_dataset, model_dir, reference)


@pytest.mark.parametrize(
    "lost, cause",
    [(1, "it stopped sending heartbeats"), (0, "its connection closed")],
    ids=["worker", "chief"],
)
def test_a_lost_worker_stops_the_other_in_one_line_and_starting_both_again_resumes(
    lost, cause, run_dataset, reference, tmp_path
):
    model_dir = tmp_path / "run"
    procs = _start(run_dataset, model_dir, tmp_path)
    left = procs[1 - lost]
    try:
        _wait_for(tmp_path / "ready", procs)
        procs[lost].kill()  # SIGKILL: its machine is gone
        killed = time.monotonic()
        (tmp_path / "go").touch()
        status, out, err = _finish([left], timeout=LOST_WORKER_BOUND_SECONDS + 60)[0]
        took = time.monotonic() - killed
    finally:
        (tmp_path / "go").touch()
        _finish(procs)

    assert took < LOST_WORKER_BOUND_SECONDS, took
    assert status == 1, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"nlr-train: error: worker {lost} of the multi-worker job is gone ({cause}): this worker stopped too; start "
        "every worker again with the same command to resume from its last checkpoint (step 5)"
    )
    assert not (model_dir / run_files.MODEL_FILE).exists()

    _completes_as_uninterrupted(run_dataset, model_dir, reference)
