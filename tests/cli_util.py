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
