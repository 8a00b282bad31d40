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


_DIGITS_FLAGFILE = {
    "noisy": "noisy",
    "gt": "clean_upper",
    "ft_whole": "ft_whole",
    "ft_last": "ft_last",
    "ft_mixed": "ft_mixed",
    "lc_pretrained": "label_cleaning_pretrained",
    "lc_joint": "label_cleaning_joint",
    "nr_sigmoid": "nr_sigmoid",
    "nr_tanh": "nr_tanh",
    "nr_relu": "nr_relu",
    "h_only": "h_only",
    "g_only": "g_only",
}


def test_digits_flagfiles_carry_the_reproduction_settings():
    """flags/digits_ml_* run by hand what nlr-reproduce runs (steps and paths aside)."""
    from nlr_tf.reproduce import plan

    shared = (plan.NOISY, plan.GT)
    rows = [("ml", r) for r in shared + plan.MULTI_LABEL_ROWS + plan.MULTI_LABEL_ABLATIONS]
    rows += [("sl", r) for r in shared + plan.SINGLE_LABEL_ROWS]
    checked = 0
    for variant, row in rows:
        if row.key not in _DIGITS_FLAGFILE:
            continue  # rows without a flagfile: clean_only, the whole-network extension
        checked += 1
        path = os.path.join(ROOT, "flags", f"digits_{variant}_{_DIGITS_FLAGFILE[row.key]}.cfg")
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["nlr-train", f"--flagfile={path}", "--model_dir=/tmp/unused"])
            config = train_cli.config_from_flags()
        assert config.method == row.method, row.key
        for key, value in row.config().items():
            if key == "pretrain":
                assert config.cleaning_pretrain_steps > 0, row.key
            else:
                assert getattr(config, key) == value, (row.key, key)
        trains_backbone = config.train_backbone
        if trains_backbone is None:  # the method's default, else the multi-label scheme's (frozen)
            trains_backbone = bool(METHODS[row.method].train_backbone)
        assert bool(trains_backbone) is (row.stage != "heads"), row.key
    assert checked == 18
