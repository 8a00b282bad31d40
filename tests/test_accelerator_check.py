"""benchmarks/accelerator_check.py: one line and exit 0 without an accelerator; every step run with --force."""

import os
import subprocess
import sys

import pytest
from cli_util import ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "accelerator_check.py")


def _check(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=600)


def test_without_an_accelerator_it_says_so_in_one_line(tmp_path):
    proc = _check(f"--work_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "accelerator check: no GPU and no --tpu on this machine; nothing to check"
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_forced_on_a_cpu_it_trains_every_configuration_evaluates_and_exports(tmp_path):
    args = ("--force", "--backbone=small_cnn", "--image_size=16", "--steps=4", "--num_train=300")
    proc = _check(f"--work_dir={tmp_path}", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert sum("images/s" in line for line in lines) == 4  # float32 and mixed_float16, XLA off and on
    assert (tmp_path / "export" / "1" / "saved_model.pb").exists()
    assert lines[-1] == "accelerator check: every step passed"
    # A failing step fails the check: a backbone nlr-train does not know.
    proc = _check(f"--work_dir={tmp_path / 'bad'}", args[0], "--backbone=no_such_net", *args[2:])
    assert proc.returncode == 1 and "FAILED" in proc.stdout
