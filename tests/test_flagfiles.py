"""Every flagfile parses with nlr-train's flags; the benchmark's are nlr-reproduce's runs and run end to end."""

import dataclasses
import glob
import os
import re
import shlex

import pytest
from absl import flags
from absl.testing import flagsaver
from cli_util import ROOT, run_cli

from nlr_tf.cli import train as train_cli  # noqa: F401  (defines the flags)
from nlr_tf.models.methods import METHODS
from nlr_tf.reproduce import budgets, flagfiles, plan, run_configs
from nlr_tf.reproduce.rows import (
    GT,
    MULTI_LABEL_BASELINE_EXTRAS,
    MULTI_LABEL_BASELINES,
    MULTI_LABEL_EXTRAS,
    MULTI_LABEL_ROWS,
    NOISY,
    SHORT,
    SINGLE_LABEL_BASELINE_EXTRAS,
    SINGLE_LABEL_BASELINES,
    SINGLE_LABEL_EXTRAS,
    SINGLE_LABEL_ROWS,
)

FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "*.cfg")))
DIGITS_FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "flags", "digits_*.cfg")))
# Every nlr-train row of the built-in benchmark's plan (the scikit-learn reference fits have no flagfile).
DIGITS_ROWS = [
    (variant, row)
    for variant, rows in (
        (
            "multi_label",
            (NOISY, GT) + MULTI_LABEL_ROWS + MULTI_LABEL_BASELINES + MULTI_LABEL_EXTRAS + MULTI_LABEL_BASELINE_EXTRAS,
        ),
        (
            "single_label",
            (NOISY, GT)
            + SINGLE_LABEL_ROWS
            + SINGLE_LABEL_BASELINES
            + SINGLE_LABEL_EXTRAS
            + SINGLE_LABEL_BASELINE_EXTRAS,
        ),
    )
    for row in rows
    if row.stage != "reference"
]
REGENERATE = "run `python -m nlr_tf.reproduce.flagfiles` to regenerate flags/digits_*.cfg"


def _parse(path, *extra):
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["nlr-train", f"--flagfile={path}", "--model_dir=/tmp/unused", *extra])
        assert flags.FLAGS.method in METHODS
        return train_cli.config_from_flags()


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
    assert {f"digits_{SHORT[v]}_{r.key}" for v, r in DIGITS_ROWS} <= names


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: os.path.basename(p))
def test_flagfile_parses_and_carries_its_command(path):
    text = open(path).read()
    assert re.search(rf"^#   nlr-train --flagfile=flags/{re.escape(os.path.basename(path))}", text, re.M)
    config = _parse(path)
    assert config.dataset and config.train_steps > 0
    if METHODS[config.method].init == "required":
        assert config.init_checkpoint


def test_digits_flagfiles_are_generated_from_the_plan():
    """flags/digits_*.cfg are exactly what nlr_tf.reproduce.flagfiles renders from the plan, and nothing else."""
    texts = flagfiles.flagfiles()
    assert sorted(texts) == sorted(flagfiles.flagfile_name(v, r) for v, r in DIGITS_ROWS)
    on_disk = sorted(os.path.basename(p) for p in DIGITS_FLAGFILES)
    assert on_disk == sorted(texts), f"flags/digits_*.cfg differ from the plan's rows: {REGENERATE}"
    for name, text in texts.items():
        with open(os.path.join(ROOT, "flags", name)) as f:
            assert f.read() == text, f"flags/{name} is stale: {REGENERATE}"


_PATHS = ("model_dir", "dataset", "init_checkpoint", "feature_cache", "reference_features")


@pytest.mark.parametrize("variant,row", DIGITS_ROWS, ids=[f"{SHORT[v]}_{r.key}" for v, r in DIGITS_ROWS])
def test_digits_flagfile_is_the_reproduction_run(variant, row):
    """A digits flagfile parses to the TrainConfig nlr-reproduce trains its row with (paths and grid rate aside)."""
    budget = budgets.FULL
    config = _parse(os.path.join(ROOT, "flags", flagfiles.flagfile_name(variant, row)))
    fraction = None if row.shared else budget.main_fraction
    grid = budget.stage(row.stage).learning_rates
    lr_fields = dict(row.lr_fields)
    # The runner's config of this row's run (seed 0, the main fraction) at each rate of the stage's grid.
    expected = [
        run_configs.train_config(plan.Run(variant, budget.seeds[0], fraction, row, lr), "/out", budget, "/out/noisy")
        for lr in grid
    ]
    for field in dataclasses.fields(config):
        name = field.name
        got, wanted = getattr(config, name), [getattr(e, name) for e in expected]
        if name in _PATHS:
            assert bool(got) == bool(wanted[0]), (name, got, wanted[0])
        elif name in lr_fields and len(grid) > 1:
            assert got in wanted, (name, got, wanted)
        else:
            assert got == wanted[0], (name, got, wanted[0])
    # The grid's rates move together: the flagfile's rates are one run's.
    assert any(all(getattr(config, f) == getattr(e, f) for f in lr_fields) for e in expected)
    # The paths are the user's, and the ones the header's commands make.
    assert config.dataset == f"out/digits_mosaic_{SHORT[variant]}"
    if config.init_checkpoint:
        start = flagfiles.starting_row(variant, row)
        assert config.init_checkpoint == f"runs/digits_{SHORT[variant]}_{start.key}"
        assert start.key == (row.starts_from or "noisy")
    for cache in (config.feature_cache, config.reference_features):
        assert cache in ("", f"runs/digits_{SHORT[variant]}_noisy/features")
    assert bool(config.init_checkpoint) is (row.stage != "scratch")
    assert config.train_backbone is {"scratch": None, "whole": True, "heads": False}[row.stage]


def _dataset_command(name):
    """The nlr-make-tfrecords arguments in a digits flagfile's header."""
    text = open(os.path.join(ROOT, "flags", name + ".cfg")).read()
    command = shlex.split(re.search(r"^#   nlr-make-tfrecords (.*)$", text, re.M).group(1))
    return [a for a in command if not a.startswith("--output_dir=")]


def test_benchmark_flagfiles_run_on_digits_mosaic(tmp_path):
    data = tmp_path / "digits"
    proc = run_cli(
        "make_tfrecords",
        *_dataset_command("digits_ml_noisy"),
        "--num_train=400",
        "--num_val=20",
        "--num_test=20",
        f"--output_dir={data}",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    short = [f"--dataset={data}", "--train_steps=4", "--log_steps=2"]
    noisy = tmp_path / "noisy"
    heads = [f"--init_checkpoint={noisy}", f"--feature_cache={tmp_path / 'fc'}"]
    for name, model_dir, extra in (
        ("digits_ml_noisy", noisy, []),
        ("digits_ml_nr_sigmoid", tmp_path / "nr", heads),
        ("digits_ml_lc_pretrained", tmp_path / "lc", [*heads, "--cleaning_pretrain_steps=2"]),
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
