"""nlr-train: every method from the CLI, resume, TensorBoard, bad flags."""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from cli_util import ROOT, run_cli
from conftest import write_toy_dataset

from nlr_tf.models.methods import METHODS
from nlr_tf.training.checks import ConfigError
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.trainer import train

COMMON = ["--backbone=small_cnn", "--image_size=16", "--batch_size=20", "--log_steps=5", "--checkpoint_steps=10"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    write_toy_dataset(path, {"noisy": 120, "clean": 30, "val": 10}, num_shards=4)
    return str(path)


@pytest.fixture(scope="module")
def noisy_run(dataset, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("runs") / "noisy")
    proc = run_cli(
        "train", "--method=noisy", f"--dataset={dataset}", f"--model_dir={model_dir}", "--train_steps=20", *COMMON
    )
    assert proc.returncode == 0, proc.stderr
    return model_dir


def _scalar_tags(model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(model_dir, "train"), size_guidance={"tensors": 0})
    acc.Reload()
    return set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "noisy"])
def test_every_method_trains_from_the_cli(method, dataset, noisy_run, tmp_path):
    model_dir = str(tmp_path / method)
    args = [f"--method={method}", f"--dataset={dataset}", f"--model_dir={model_dir}", "--train_steps=10", *COMMON]
    if METHODS[method].init != "none":
        args.append(f"--init_checkpoint={noisy_run}")
    if method == "label_cleaning":
        args.append("--cleaning_pretrain_steps=5")
    if method in ("confident_learning", "cleannet"):  # they read cached features
        args.append(f"--feature_cache={tmp_path / 'features'}")
    if method == "cleannet":
        args.append("--cleannet_steps=20")
    proc = run_cli("train", *args)
    assert proc.returncode == 0, proc.stderr
    assert f"trained {method} for 10 steps" in proc.stdout
    assert os.path.isfile(os.path.join(model_dir, "model.keras"))
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-10")
    config = json.load(open(os.path.join(model_dir, "config.json")))
    assert config["method"] == method and config["num_classes"] == 5
    tags = _scalar_tags(model_dir)
    assert {"losses/loss", "examples_per_second"} <= tags
    assert f"learning_rate/{METHODS[method].model_class().head_part}" in tags
    if method == "label_cleaning":
        assert {"losses/clean_loss", "losses/classify_loss", "learning_rate/cleaning"} <= tags
    if method == "noise_regularization":
        assert {"losses/clean_loss", "losses/noise_loss"} <= tags


def test_every_family_saved_model_loads_in_a_new_process(tmp_path):
    """nlr-eval, nlr-export and nlr-clean-labels load a run's model.keras in a process that trained nothing."""
    from nlr_tf.models.methods import FAMILIES, build_model
    from nlr_tf.training.model_dir import CONFIG_FILE, MODEL_FORMAT

    dirs = []
    for name in FAMILIES:
        method = next(m for m in METHODS.values() if m.family == name)
        model = build_model(method, 3, "small_cnn", image_size=16, options={"multi_label": True})
        model_dir = tmp_path / name
        model_dir.mkdir()
        model.save(model_dir / "model.keras")
        (model_dir / CONFIG_FILE).write_text(json.dumps({"family": name, "model_format": MODEL_FORMAT}))
        dirs.append(str(model_dir))
    code = (
        "import sys\n"
        "from nlr_tf.training.model_dir import load_trained_model\n"
        "for d in sys.argv[1:]:\n"
        "    print(type(load_trained_model(d)[0]).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *dirs], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(proc.stdout.split()) == len(FAMILIES)


def test_noisy_run_wrote_everything(noisy_run):
    assert {"checkpoints", "config.json", "model.keras", "train", "train_result.json"} <= set(os.listdir(noisy_run))
    result = json.load(open(os.path.join(noisy_run, "train_result.json")))
    assert result["step"] == 20


def test_killed_run_resumes_and_ends_at_the_same_step(dataset, tmp_path):
    model_dir = str(tmp_path / "resume")
    cmd = [
        sys.executable,
        "-m",
        "nlr_tf.cli.train",
        "--method=noisy",
        f"--dataset={dataset}",
        f"--model_dir={model_dir}",
        "--train_steps=400",
        "--backbone=small_cnn",
        "--image_size=16",
        "--batch_size=20",
        "--log_steps=5",
        "--checkpoint_steps=10",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        latest = tf.train.latest_checkpoint(ckpt_dir) if os.path.isdir(ckpt_dir) else None
        if latest and int(latest.rsplit("-", 1)[1]) >= 30:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(tf.train.latest_checkpoint(ckpt_dir).rsplit("-", 1)[1])
    assert 30 <= killed_at < 400 and not os.path.exists(os.path.join(model_dir, "model.keras"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"resumed from {ckpt_dir}/ckpt-{killed_at}" in done.stderr
    assert "trained noisy for 400 steps" in done.stdout
    assert json.load(open(os.path.join(model_dir, "train_result.json")))["step"] == 400


def _config(dataset, model_dir, **kwargs):
    base = dict(method="noisy", dataset=dataset, model_dir=model_dir, image_size=16, batch_size=20, train_steps=5)
    base.update(kwargs)
    return TrainConfig(**base)


@pytest.mark.slow
def test_bad_configurations_fail_at_start_with_one_clear_line(dataset, noisy_run, tmp_path):
    no_clean = tmp_path / "no_clean"
    write_toy_dataset(no_clean, {"noisy": 20})
    other = tmp_path / "other"
    write_toy_dataset(other, {"noisy": 20, "clean": 10}, num_classes=7)
    cases = [
        (["--method=nonsense"], "method"),
        ([f"--dataset={tmp_path / 'missing'}"], "dataset folder not found"),
        (["--method=noise_regularization", f"--dataset={no_clean}"], "needs clean data but split 'clean' is absent"),
        (["--method=ft_last", f"--dataset={other}", f"--init_checkpoint={noisy_run}"], "has 5 classes but dataset"),
        (["--method=ft_last"], "pass --init_checkpoint"),
        (["--method=noisy", f"--init_checkpoint={noisy_run}"], "drop --init_checkpoint"),
        (["--method=noise_regularization", "--batch_size=15"], "15"),
        (["--method=noise_regularization", "--cleaning_pretrain_steps=3"], "label_cleaning only"),
        (
            ["--method=ft_last", f"--init_checkpoint={noisy_run}", "--alpha=0.5"],
            "--alpha applies to --method=noise_regularization or g_only only",
        ),
        (["--method=label_cleaning", "--cleaning_pretrain_steps=5"], "leaves no main training in --train_steps=5"),
        (["--method=ft_last", f"--init_checkpoint={tmp_path}"], "no checkpoint"),
        (
            ["--method=noise_regularization", "--train_backbone=true", f"--feature_cache={tmp_path / 'fc'}"],
            "--train_backbone=false",
        ),
        (["--backbone=resnet50", "--image_size=32", "--backbone_weights=/nope.h5"], "not found"),
        (["--learning_rate=0"], "--learning_rate must be > 0, got 0.0"),
        (["--method=label_cleaning", "--cleaning_joint_learning_rate=0"], "--cleaning_joint_learning_rate must be > 0"),
        (["--lr_decay_rate=0.5", "--lr_decay_epochs=0"], "--lr_decay_rate=0.5 needs --lr_decay_epochs > 0"),
        (["--image_size=4"], "--image_size=4: small_cnn needs images of at least 8 pixels"),
        (["--mix_ratio=9:x"], "mix"),
        (["--eval_split=vall", "--eval_steps=5"], "--eval_split=vall is absent from dataset"),
    ]
    common = [
        f"--dataset={dataset}",
        "--method=noisy",
        "--train_steps=5",
        "--image_size=16",
        "--batch_size=20",
    ]
    # Each case is a process of its own (most of its time is importing TensorFlow): several at once, each in a
    # model dir of its own (one job at a time trains in a model dir).
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        procs = list(
            pool.map(
                lambda i: run_cli("train", *common, f"--model_dir={tmp_path / f'bad{i}'}", *cases[i][0]),
                range(len(cases)),
            )
        )
    for (extra, message), proc in zip(cases, procs):
        assert proc.returncode != 0, extra
        errors = [
            line
            for line in proc.stderr.splitlines()
            if "rror" in line and not line.startswith(("I0000", "W0000", "E0000"))
        ]
        assert errors and message in errors[-1], (extra, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, extra
    # Nothing is written for a configuration that cannot run: not even the model dir.
    assert not any(os.path.exists(tmp_path / f"bad{i}") for i in range(len(cases)))


def test_a_diverging_run_stops_with_one_line_and_keeps_the_checkpoint_before_it(dataset, tmp_path):
    model_dir = tmp_path / "diverges"
    # A (barely) decaying rate is a schedule, which a checkpoint does not hold: a resumed run takes the new one.
    args = ["--method=noisy", f"--dataset={dataset}", f"--model_dir={model_dir}", "--lr_decay_rate=0.999", *COMMON]
    proc = run_cli("train", *args, "--train_steps=10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Resumed at step 10 with a learning rate that sends the weights to infinity within a few steps.
    proc = run_cli("train", *args, "--train_steps=40", "--learning_rate=1e38")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nlr-train: error: the loss became non-finite between steps 10 and 15"), last
    assert "ckpt-10: lower the learning rate" in last
    state = tf.train.get_checkpoint_state(str(model_dir / "checkpoints"))
    assert state.model_checkpoint_path.endswith("ckpt-10")  # nothing was saved after the divergence
    for name, _ in tf.train.list_variables(state.model_checkpoint_path):
        if name.startswith("model/"):
            value = tf.train.load_variable(state.model_checkpoint_path, name)
            assert np.all(np.isfinite(value)), name
    # The model file is the 10-step run's, whose weights are finite; the diverged run wrote no new result.
    assert json.loads((model_dir / "train_result.json").read_text())["step"] == 10


def test_a_model_dir_of_another_run_is_refused(dataset, noisy_run):
    with pytest.raises(ConfigError, match="holds a run with method='noisy'"):
        train(_config(dataset, noisy_run, method="clean"))


def test_best_evaluation_and_patience_on_a_hand_made_history():
    from nlr_tf.training.early_stopping import best_evaluation, patience_exhausted

    history = [{"step": s, "mAP": v} for s, v in ((10, 0.5), (20, 0.7), (30, 0.7), (40, 0.6), (50, 0.65))]
    assert best_evaluation(history, "mAP")["step"] == 20  # a tie keeps the earliest
    assert best_evaluation(history, "mAP", after=20)["step"] == 30  # pretraining evaluations are not candidates
    assert best_evaluation(history, "mAP", after=50) is None
    assert patience_exhausted(history, "mAP", 3) and not patience_exhausted(history, "mAP", 4)
    assert not patience_exhausted(history, "mAP", 0)
    # After step 20 the best is step 30, with two later evaluations (40 and 50).
    assert patience_exhausted(history, "mAP", 2, after=20) and not patience_exhausted(history, "mAP", 3, after=20)


def test_early_stopping_keeps_the_best_validation_weights_and_stays_stopped(dataset, tmp_path):
    from nlr_tf.data.schema import load_dataset_info
    from nlr_tf.evaluation.evaluator import evaluate
    from nlr_tf.training.model_dir import load_trained_model

    config = TrainConfig(
        method="noisy",
        dataset=dataset,
        model_dir=str(tmp_path / "es"),
        image_size=16,
        batch_size=20,
        learning_rate=3e-3,
        train_steps=300,
        log_steps=5,
        checkpoint_steps=100,
        eval_split="val",
        eval_steps=5,
        early_stopping_patience=2,
        restore_best=True,
        deterministic=True,
    )
    result = train(config)
    history = result["eval_history"]
    best = max(history, key=lambda e: (e["mAP"], -e["step"]))
    assert result["best_step"] == best["step"] and result["best_mAP"] == best["mAP"]
    # Toy labels are random: validation mAP stops improving long before 300 steps.
    assert result["stopped_early"] and result["step"] < 300
    assert [e["step"] for e in history] == list(range(5, result["step"] + 1, 5))
    assert sum(e["step"] > best["step"] for e in history) == 2
    # model.keras holds the best evaluation's weights, not the last step's.
    model, run_config = load_trained_model(config.model_dir)
    metrics = evaluate(model, load_dataset_info(dataset), "val", backbone="small_cnn", image_size=16)
    assert metrics["mAP"] == pytest.approx(best["mAP"], abs=1e-6)
    assert metrics["mAP"] != pytest.approx(history[-1]["mAP"], abs=1e-6) or history[-1]["step"] == best["step"]
    # The model dir stands for those weights as --init_checkpoint (and as a feature cache's source).
    from nlr_tf.training.model_dir import resolve_checkpoint

    assert resolve_checkpoint(config.model_dir)[0] == os.path.join(config.model_dir, "best", f"ckpt-{best['step']}")
    # Started again, a stopped run does not train further.
    again = train(config)
    assert again["step"] == result["step"] and again["best_step"] == best["step"]


def test_early_stopping_needs_an_evaluation(dataset, tmp_path):
    config = TrainConfig(
        method="noisy", dataset=dataset, model_dir=str(tmp_path / "x"), image_size=16, early_stopping_patience=3
    )
    with pytest.raises(ConfigError, match="need --eval_split and --eval_steps"):
        train(config)
    assert not os.path.exists(tmp_path / "x")
