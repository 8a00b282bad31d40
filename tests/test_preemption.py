"""Preemption: a SIGTERM ends nlr-train with a checkpoint of the step it reached, and the same command resumes.

An `nlr-train` process is paused, by a hook, right after the steps up to a
chosen step between two checkpoints; the test sends it a real SIGTERM
there and lets it go on. It must checkpoint that step, print one line and
exit with `PREEMPTED_STATUS`; the same command started again must end as
the same run never interrupted (`--deterministic`): same weights, last
checkpoint and evaluation history.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf
from cli_util import ROOT, noisy_run_args, run_cli
from test_resume import assert_same_run

from nlr_tf.training import model_dir as run_files
from nlr_tf.training import preemption

# nlr-train's own main, paused right after logging step argv[3]: it touches argv[1], then waits for argv[2].
_PAUSED_TRAIN = """
import os, sys, time
from nlr_tf.training import trainer
ready, gate, at = sys.argv.pop(1), sys.argv.pop(1), int(sys.argv.pop(1))
write_logs = trainer._write_logs

def paused(writer, model, config, current, logs):
    write_logs(writer, model, config, current, logs)
    if current == at:
        open(ready, "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)

trainer._write_logs = paused
from nlr_tf.cli import train
train.run()
"""


def _args(run_dataset, model_dir) -> list[str]:
    """A noisy run of 16 steps, logged every 2, checkpointed every 5 and evaluated every 4 (best weights kept)."""
    return noisy_run_args(
        run_dataset,
        model_dir,
        "--train_steps=16",
        "--log_steps=2",
        "--checkpoint_steps=5",
        "--eval_split=val",
        "--eval_steps=4",
        "--restore_best",
    )


def _result(model_dir) -> dict:
    with open(os.path.join(model_dir, run_files.RESULT_FILE)) as f:
        return json.load(f)


def test_a_sigterm_between_checkpoints_saves_that_step_and_the_same_command_resumes(run_dataset, tmp_path):
    """Steps run 0-2-4-5-7-8-10...: SIGTERM at step 7, between ckpt-5 and ckpt-10, after the evaluation of step 4."""
    at = 7
    ready, gate = tmp_path / "ready", tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    args = _args(run_dataset, tmp_path / "resumed")
    paused = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_TRAIN, str(ready), str(gate), str(at), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        once = run_cli("train", *_args(run_dataset, tmp_path / "once"))  # meanwhile the other run reaches step 7
        assert once.returncode == 0, once.stderr[-3000:]
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert paused.poll() is None and time.monotonic() < deadline, "the run never reached step 7"
            time.sleep(0.1)
        paused.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the handler runs while the hook sleeps
    finally:
        gate.touch()
        stdout, stderr = paused.communicate(timeout=300)

    assert paused.returncode == preemption.PREEMPTED_STATUS == 75, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stdout.strip().splitlines()[-1] == (
        f"nlr-train: preempted at step {at}: checkpoint saved; run the same command to resume"
    )
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert os.path.basename(tf.train.latest_checkpoint(str(checkpoints))) == f"ckpt-{at}"
    assert (checkpoints / "ckpt-5.index").exists()
    assert dict(tf.train.list_variables(str(checkpoints / f"ckpt-{at}")))  # it reads
    assert json.loads((tmp_path / "resumed" / "eval_history.json").read_text())[-1]["step"] == 4
    assert not (tmp_path / "resumed" / run_files.MODEL_FILE).exists()
    assert not (tmp_path / "resumed" / "job.lock").exists()

    resumed = run_cli("train", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoints / f'ckpt-{at}'} at step {at}" in resumed.stderr
    # Every variable but the count of checkpoints saved: the preempted run saved one more.
    dirs = (str(tmp_path / "resumed"), str(tmp_path / "once"))
    assert_same_run(*(_result(d) for d in dirs), *dirs, not_compared=("save_counter/.ATTRIBUTES/VARIABLE_VALUE",))


def test_the_handler_only_sets_a_flag_and_is_put_back():
    before = signal.getsignal(signal.SIGTERM)
    with preemption.notice() as notice:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # Python runs the handler at the next instruction boundary of the main thread
        assert notice.requested
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("installed", [preemption.notice, preemption.raise_on_sigterm, preemption.run_notice])
def test_a_process_forked_under_a_handler_ends_on_sigterm_whatever_it_is_doing(installed):
    # A multiprocessing pool's worker, ended by its pool with SIGTERM: with a Python handler it would live on while
    # stuck in C, and the pool would wait for it forever.
    with installed():
        pid = os.fork()
        if pid == 0:  # the child: SIGTERM's default action, not a handler that needs Python to run
            os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)  # this process keeps it


def test_outside_the_main_thread_nothing_is_installed():
    before, seen = signal.getsignal(signal.SIGTERM), []

    def in_a_thread():
        with preemption.notice() as notice, preemption.raise_on_sigterm():
            seen.append((signal.getsignal(signal.SIGTERM), notice.requested))

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [(before, False)]
