"""Resuming: a run killed and started again ends where the same run never interrupted ends.

Each test trains one configuration twice under `--deterministic`: once
without a stop, and once in a process killed with SIGKILL at a chosen
point (right after a checkpoint, or right after an evaluation that no
checkpoint holds yet), then started again in the same model dir. Both must
end at the same step with the same weights (the final model and every
variable of the last checkpoint, optimizer slots included) and the same
evaluation history.

The kill is real but placed, not timed: the killed process runs `train`
with a hook that sends itself SIGKILL once the chosen checkpoint (and the
best weights saved with it) or evaluation has been written, so nothing after
that point runs, not even Python's clean-up.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_util import ROOT
from conftest import write_toy_dataset

from nlr_tf.data import pipeline
from nlr_tf.data.input_config import InputConfig
from nlr_tf.training import early_stopping
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.trainer import train

# Runs `train(config)` and kills itself (SIGKILL) right after the checkpoint of step N is saved, with the best
# weights saved together with it ("checkpoint N"), right after the evaluation of step N ("evaluation N"), or
# right after the weights of a best evaluation later than step N are written, before the checkpoint that would
# hold its history ("best N").
# Two logical CPUs as in conftest.py: the same devices as the process that resumes.
_KILLED_RUN = """
import json, os, signal, sys
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
from nlr_tf.training import early_stopping
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.trainer import train

fields = json.loads(sys.argv[1])
config = TrainConfig(**dict(fields, devices=tuple(fields["devices"])))
point, at = sys.argv[2], int(sys.argv[3])
Evaluations = early_stopping.Evaluations
save_best, commit, evaluate = Evaluations.save_best, Evaluations.commit, Evaluations.evaluate

def after_best(self):  # the trainer writes the best weights right before each checkpoint
    pending = self.pending_best
    save_best(self)
    if point == "best" and pending is not None and pending[0] > at:
        os.kill(os.getpid(), signal.SIGKILL)

def after_checkpoint(self, kept_steps=()):  # and deletes older best weights right after it
    commit(self, kept_steps)
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    if point == "checkpoint" and latest.endswith(f"ckpt-{at}"):
        os.kill(os.getpid(), signal.SIGKILL)

def after_evaluation(self, step):
    evaluate(self, step)
    if point == "evaluation" and step == at:
        os.kill(os.getpid(), signal.SIGKILL)

Evaluations.save_best, Evaluations.commit, Evaluations.evaluate = after_best, after_checkpoint, after_evaluation
train(config)
sys.exit("the run ended before it was killed")
"""


def _start_killed_run(config: TrainConfig, point: str, at: int) -> subprocess.Popen:
    """Starts training `config` in a new process that is killed at `point` ("checkpoint", "evaluation" or "best")
    of step `at` (the test trains the uninterrupted run meanwhile)."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    fields = json.dumps(dataclasses.asdict(config))
    return subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, fields, point, str(at)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_killed(proc: subprocess.Popen, config: TrainConfig) -> None:
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    assert not os.path.exists(os.path.join(config.model_dir, "model.keras"))


def _killed_run(config: TrainConfig, point: str, at: int) -> None:
    _wait_killed(_start_killed_run(config, point, at), config)


def _last_checkpoint(model_dir: str) -> str:
    return tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))


def assert_same_run(
    resumed: dict, uninterrupted: dict, resumed_dir: str, uninterrupted_dir: str, not_compared: tuple[str, ...] = ()
) -> None:
    """Same final step, final model, last checkpoint (every variable but those `not_compared`) and evaluation
    history."""
    assert resumed["step"] == uninterrupted["step"]
    assert resumed["weights_checksum"] == pytest.approx(uninterrupted["weights_checksum"], rel=1e-9)
    # model.keras: every weight, in the model's order (layer names may differ from process to process).
    models = [keras.saving.load_model(os.path.join(d, "model.keras")) for d in (resumed_dir, uninterrupted_dir)]
    assert len(models[0].weights) == len(models[1].weights)
    for got, want in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7, err_msg=want.path)
    # The last checkpoint: the same step, and the same value of every variable (the optimizers' too).
    prefixes = [_last_checkpoint(d) for d in (resumed_dir, uninterrupted_dir)]
    assert os.path.basename(prefixes[0]) == os.path.basename(prefixes[1])
    names = [dict(tf.train.list_variables(p)) for p in prefixes]
    assert names[0] == names[1]
    for name in names[1]:
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH" and name not in not_compared:
            np.testing.assert_allclose(
                tf.train.load_variable(prefixes[0], name),
                tf.train.load_variable(prefixes[1], name),
                rtol=1e-6,
                atol=1e-7,
                err_msg=name,
            )
    histories = [
        json.load(open(p)) if os.path.isfile(p) else None
        for p in (os.path.join(d, "eval_history.json") for d in (resumed_dir, uninterrupted_dir))
    ]
    assert histories[0] == histories[1]
    assert resumed.get("eval_history") == uninterrupted.get("eval_history")
    assert resumed.get("best_step") == uninterrupted.get("best_step")


@pytest.mark.parametrize("ratio", ["9:1", "1:0"])
def test_a_stream_skipping_batches_goes_on_as_the_stream_that_gave_them(ratio, tmp_path):
    """What a resumed run reads: the same batches (augmented crops included) as the uninterrupted stream's next."""
    info, _ = write_toy_dataset(tmp_path / "toy", {"noisy": 30, "clean": 10}, num_shards=3)
    input_config = InputConfig(backbone="small_cnn", image_size=8, deterministic=True, seed=4, augment=True)
    kwargs = dict(input_config=input_config, with_ids=True)
    whole = list(pipeline.make_train_dataset(info, 10, ratio, **kwargs).take(9))
    resumed = list(pipeline.make_train_dataset(info, 10, ratio, skip_batches=5, **kwargs).take(4))
    for want, got in zip(whole[5:], resumed, strict=True):
        assert got["id"].numpy().tolist() == want["id"].numpy().tolist()
        np.testing.assert_array_equal(got["image"].numpy(), want["image"].numpy())


def _config(run_dataset, model_dir, **kwargs) -> TrainConfig:
    base = dict(
        dataset=run_dataset,
        model_dir=str(model_dir),
        image_size=16,
        batch_size=20,
        log_steps=5,
        checkpoint_steps=5,
        deterministic=True,
        seed=1,
    )
    return TrainConfig(**(base | kwargs))


def test_label_cleaning_resumes_inside_pretraining_and_right_after_it(run_dataset, tmp_path):
    """Killed at step 6 (pretraining the cleaning net on the clean set, 10 steps), resumed, killed again at step 12
    (2 steps into joint training), resumed to the end."""
    config = lambda d: _config(  # noqa: E731
        run_dataset,
        tmp_path / d,
        method="label_cleaning",
        train_backbone=True,
        cleaning_pretrain_steps=10,
        checkpoint_steps=6,
        train_steps=20,
    )
    killed = _start_killed_run(config("resumed"), "checkpoint", 6)
    uninterrupted = train(config("once"))
    _wait_killed(killed, config("resumed"))
    assert _last_checkpoint(str(tmp_path / "resumed")).endswith("ckpt-6")
    _killed_run(config("resumed"), "checkpoint", 12)
    assert _last_checkpoint(str(tmp_path / "resumed")).endswith("ckpt-12")
    resumed = train(config("resumed"))
    assert_same_run(resumed, uninterrupted, str(tmp_path / "resumed"), str(tmp_path / "once"))


def test_heads_on_a_feature_cache_resume(run_dataset, tmp_path):
    """noise_regularization heads on a frozen noisy backbone's cached features; the killed run built its cache."""
    train(_config(run_dataset, tmp_path / "noisy", method="noisy", train_steps=5))
    config = lambda d: _config(  # noqa: E731
        run_dataset,
        tmp_path / d,
        method="noise_regularization",
        init_checkpoint=str(tmp_path / "noisy"),
        train_backbone=False,
        feature_cache=str(tmp_path / d / "features"),
        train_steps=20,
    )
    killed = _start_killed_run(config("resumed"), "checkpoint", 10)
    uninterrupted = train(config("once"))
    _wait_killed(killed, config("resumed"))
    assert os.path.isfile(tmp_path / "resumed" / "features" / "dataset.json")
    resumed = train(config("resumed"))
    assert_same_run(resumed, uninterrupted, str(tmp_path / "resumed"), str(tmp_path / "once"))


def _evaluated(run_dataset, tmp_path, **overrides):
    """The config (by model dir name) of a noisy run evaluated on val every 5 steps, checkpointed every 10, that
    restores its best weights."""
    fields = dict(
        method="noisy", learning_rate=3e-3, checkpoint_steps=10, eval_split="val", eval_steps=5, restore_best=True
    )
    return lambda d: _config(run_dataset, tmp_path / d, **fields, **overrides)


def test_evaluation_history_and_best_step_survive_a_kill_between_checkpoints(run_dataset, tmp_path):
    """Killed right after the evaluation of step 15, which is in eval_history.json but not in a checkpoint."""
    config = _evaluated(run_dataset, tmp_path, train_steps=60, early_stopping_patience=3)
    killed = _start_killed_run(config("resumed"), "evaluation", 15)
    uninterrupted = train(config("once"))
    steps = [e["step"] for e in uninterrupted["eval_history"]]
    assert steps == list(range(5, uninterrupted["step"] + 1, 5)) and steps[-1] > 20
    _wait_killed(killed, config("resumed"))
    on_disk = json.load(open(tmp_path / "resumed" / "eval_history.json"))
    assert [e["step"] for e in on_disk] == [5, 10, 15] and _last_checkpoint(str(tmp_path / "resumed")).endswith(
        "ckpt-10"
    )
    resumed = train(config("resumed"))
    assert_same_run(resumed, uninterrupted, str(tmp_path / "resumed"), str(tmp_path / "once"))
    assert resumed["stopped_early"] == uninterrupted["stopped_early"]
    assert resumed["restored_best"] and uninterrupted["restored_best"]
    best = [tf.train.latest_checkpoint(str(tmp_path / d / "best")) for d in ("resumed", "once")]
    assert os.path.basename(best[0]) == os.path.basename(best[1]) == f"ckpt-{uninterrupted['best_step']}"


def test_a_kill_between_the_best_weights_and_their_checkpoint_resumes(run_dataset, tmp_path):
    """Killed right after the weights of a best evaluation later than step 10 are written, before the checkpoint
    that would hold its history: the resumed run restores step 10, whose best weights are still there, deletes the
    newer ones, and ends as the uninterrupted run, with only the best evaluation's weights under best/."""
    config = _evaluated(run_dataset, tmp_path, train_steps=40)
    killed = _start_killed_run(config("resumed"), "best", 10)
    uninterrupted = train(config("once"))
    _wait_killed(killed, config("resumed"))
    # On disk: the checkpoint of step 10, the best weights it knows and the newer ones written for step 20.
    history = json.load(open(tmp_path / "resumed" / "eval_history.json"))
    assert _last_checkpoint(str(tmp_path / "resumed")).endswith("ckpt-10")
    known = early_stopping.best_evaluation([e for e in history if e["step"] <= 10], "mAP")["step"]
    newer = early_stopping.best_evaluation(history, "mAP")["step"]
    written = sorted(f for f in os.listdir(tmp_path / "resumed" / "best") if f.endswith(".index"))
    assert newer > 10 and written == sorted({f"ckpt-{known}.index", f"ckpt-{newer}.index"})
    resumed = train(config("resumed"))
    assert_same_run(resumed, uninterrupted, str(tmp_path / "resumed"), str(tmp_path / "once"))
    assert resumed["restored_best"] and uninterrupted["restored_best"]
    for d in ("resumed", "once"):
        kept = sorted(f for f in os.listdir(tmp_path / d / "best") if f.startswith("ckpt-"))
        assert {f.split(".")[0] for f in kept} == {f"ckpt-{uninterrupted['best_step']}"}
        latest = tf.train.latest_checkpoint(str(tmp_path / d / "best"))
        assert os.path.basename(latest) == f"ckpt-{uninterrupted['best_step']}"


def test_mirrored_on_two_logical_cpus_resumes(run_dataset, tmp_path):
    """A 9:1 mixed stream over two replicas: its one input pipeline gives two batches of 10 per step."""
    config = lambda d: _config(  # noqa: E731
        run_dataset,
        tmp_path / d,
        method="noise_regularization",
        train_backbone=False,
        strategy="mirrored",
        devices=("/cpu:0", "/cpu:1"),
        train_steps=20,
    )
    killed = _start_killed_run(config("resumed"), "checkpoint", 10)
    uninterrupted = train(config("once"))
    _wait_killed(killed, config("resumed"))
    resumed = train(config("resumed"))
    assert_same_run(resumed, uninterrupted, str(tmp_path / "resumed"), str(tmp_path / "once"))
