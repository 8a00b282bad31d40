"""Running the nlr-* binaries in a subprocess, as a user does."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `python -m nlr_tf.cli.<module> args...`; returns the completed process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", f"nlr_tf.cli.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def noisy_run_args(dataset, model_dir, *extra: str) -> list[str]:
    """nlr-train's flags for a deterministic `noisy` run on a toy dataset (16-pixel images, batches of 20), then
    `extra` (steps, logging, checkpoints, evaluation)."""
    return [
        "--method=noisy",
        f"--dataset={dataset}",
        f"--model_dir={model_dir}",
        "--image_size=16",
        "--batch_size=20",
        "--learning_rate=3e-3",
        "--deterministic",
        "--seed=1",
        *extra,
    ]


def manifest_args(root) -> list[str]:
    """nlr-make-tfrecords' flags for a manifest folder `root` holding rows.csv, classes.txt and the images."""
    return [
        "--source=manifest",
        f"--input={root / 'rows.csv'}",
        f"--classes={root / 'classes.txt'}",
        f"--image_root={root}",
    ]


def train_noisy_then_heads(root, args, *head_args) -> None:
    """Trains `noisy` into ROOT/noisy, then noise_regularization heads on its frozen backbone into ROOT/nr."""
    proc = run_cli("train", "--method=noisy", f"--model_dir={root / 'noisy'}", *args)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli(
        "train",
        "--method=noise_regularization",
        f"--model_dir={root / 'nr'}",
        f"--init_checkpoint={root / 'noisy'}",
        "--train_backbone=false",
        *args,
        *head_args,
    )
    assert proc.returncode == 0, proc.stderr
