"""Every flagfile parses with nlr-train's flags; the benchmark's run end to end."""

import glob
import os
import re

import pytest
from absl import flags
from absl.testing import flagsaver
from cli_util import ROOT, run_cli

from nlr_tf.cli import train as train_cli  # noqa: F401  (defines the flags)
from nlr_tf.models.methods import METHODS

FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))


def test_there_is_a_flagfile_per_paper_configuration():
    names = {os.path.basename(p)[:-4] for p in FLAGFILES}
    for pct in ("05", "10", "20"):
        assert {f"hu_coco_{a}_{pct}" for a in ("sigmoid", "tanh", "relu")} <= names
    assert {
        "hu_openimages",
        "hu_clothing1m",
        "veit_openimages_joint",
        "veit_openimages_pretrained",
        "veit_openimages_noisy",
        "veit_openimages_ft_clean",
        "veit_openimages_ft_mixed",
    } <= names
    assert {
        f"digits_ml_{m}"
        for m in (
            "noisy",
            "clean_upper",
            "ft_whole",
            "ft_last",
            "ft_mixed",
            "label_cleaning_joint",
            "label_cleaning_pretrained",
            "nr_sigmoid",
            "h_only",
            "g_only",
        )
    } <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: os.path.basename(p))
def test_flagfile_parses_and_carries_its_command(path):
    text = open(path).read()
    assert re.search(rf"^#   nlr-train --flagfile=flags/{re.escape(os.path.basename(path))}", text, re.M)
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["nlr-train", f"--flagfile={path}", "--model_dir=/tmp/unused"])
        assert flags.FLAGS.method in METHODS
        config = train_cli.config_from_flags()
        assert config.dataset and config.train_steps > 0
        if METHODS[config.method].init == "required":
            assert config.init_checkpoint


def test_benchmark_flagfiles_run_on_digits_mosaic(tmp_path):
    data = tmp_path / "digits"
    proc = run_cli(
        "make_tfrecords",
        "--source=digits_mosaic",
        "--num_train=400",
        "--num_val=20",
        "--num_test=20",
        f"--output_dir={data}",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    short = [f"--dataset={data}", "--train_steps=4", "--log_steps=2"]
    noisy = tmp_path / "noisy"
    for name, model_dir, extra in (
        ("digits_ml_noisy", noisy, []),
        ("digits_ml_nr_sigmoid", tmp_path / "nr", [f"--init_checkpoint={noisy}", f"--feature_cache={tmp_path / 'fc'}"]),
        (
            "digits_ml_label_cleaning_pretrained",
            tmp_path / "lc",
            [f"--init_checkpoint={noisy}", f"--feature_cache={tmp_path / 'fc'}", "--cleaning_pretrain_steps=2"],
        ),
    ):
        proc = run_cli(
            "train",
            f"--flagfile={os.path.join(ROOT, 'flags', name + '.cfg')}",
            f"--model_dir={model_dir}",
            *short,
            *extra,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "for 4 steps" in proc.stdout
