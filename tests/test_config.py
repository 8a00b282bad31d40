"""One source for the training configuration: `TrainConfig`'s fields are nlr-train's flags."""

import dataclasses
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver
from cli_util import ROOT

from nlr_tf.cli import train as train_cli
from nlr_tf.models.methods import METHODS, Method
from nlr_tf.training.config import TrainConfig


def test_every_field_is_a_flag_with_its_default_and_no_flag_is_without_a_field():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    defined = {flag.name for flag in flags.FLAGS.get_flags_for_module(train_cli)}
    assert defined == set(fields)
    for name, field in fields.items():
        default = None if field.default is dataclasses.MISSING else field.default
        assert flags.FLAGS[name].default == (list(default) if isinstance(default, tuple) else default), name
        assert flags.FLAGS[name].help.endswith(field.metadata["flag"]["help"])
    assert flags.FLAGS["method"].parser.enum_values == list(METHODS)


def test_flags_make_the_config_they_describe():
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        argv = ["nlr-train", "--method=g_only", "--dataset=d", "--model_dir=m", "--alpha=0.5", "--notrain_backbone"]
        flags.FLAGS(argv + ["--devices=a,b", "--image_size=16", "--eval_metric=top1", "--max_checkpoints=2"])
        config = train_cli.config_from_flags()
    expected = TrainConfig(method="g_only", dataset="d", model_dir="m", alpha=0.5, train_backbone=False)
    expected = dataclasses.replace(expected, devices=("a", "b"), image_size=16, eval_metric="top1", max_checkpoints=2)
    assert config == expected


@pytest.mark.parametrize(
    "bad, message",
    [
        ("--alpha=-1", "flag --alpha=-1: -1.0 is not a non-negative number"),
        ("--optimizer=adagrad", "flag --optimizer=adagrad: value should be one of <rmsprop|adam|sgd>"),
        ("--lr_decay_rate=2", r"flag --lr_decay_rate=2: 2.0 is not a number in the range \[0.0, 1.0\]"),
    ],
)
def test_bad_flags_fail_at_parse_time(bad, message):
    with flagsaver.flagsaver(), pytest.raises(flags.IllegalFlagValueError, match=message):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["nlr-train", "--method=noisy", "--dataset=d", "--model_dir=m", bad])


def _bounded_fields():
    """(flag, value just outside its bound) for every TrainConfig field with a bound."""
    cases = []
    for f in dataclasses.fields(TrainConfig):
        spec = f.metadata["flag"]
        step = 1 if f.type is int or f.type == "int" else 0.5
        if spec["lower"] is not None:
            cases.append((f.name, spec["lower"] - step))
        if spec["upper"] is not None:
            cases.append((f.name, spec["upper"] + step))
    return cases


@pytest.mark.parametrize("name,value", _bounded_fields(), ids=lambda v: str(v))
def test_every_bounded_flag_refuses_a_value_past_its_bound_at_parse_time(name, value):
    """Parse-time errors come before anything is written: one line naming the flag and its value."""
    with flagsaver.flagsaver(), pytest.raises(flags.IllegalFlagValueError, match=rf"^flag --{name}="):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["nlr-train", "--method=noisy", "--dataset=d", "--model_dir=m", f"--{name}={value}"])


def test_help_imports_no_tensorflow():
    code = "import sys; import nlr_tf.cli.train; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_a_method_of_an_unknown_family_cannot_exist():
    with pytest.raises(ValueError, match="Received: family=co_teaching"):
        Method("co_teaching", "co_teaching", "1:0", "none", (), True, "")
    families = {m.family for m in METHODS.values()}
    expected = {
        "classifier",
        "label_cleaning",
        "noise_regularization",
        "forward",
        "misra",
        "confident_learning",
        "cleannet",
    }
    assert families == expected


def test_every_family_names_a_model_class_that_declares_what_the_trainer_asks():
    from nlr_tf.models.base_model import NoisyLabelModel
    from nlr_tf.models.methods import DATASET_OPTIONS, FAMILIES

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for family in FAMILIES.values():
        cls = family.model_class()
        assert issubclass(cls, NoisyLabelModel) and cls.family == family.name
        assert set(family.options) <= fields | set(DATASET_OPTIONS) and set(cls.training_options) <= fields
        for phase in cls.phases:
            assert phase.steps_option in cls.training_options and callable(getattr(cls, f"{phase.name}_step"))


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_the_default_batch_splits_into_every_methods_mix(replicas):
    from nlr_tf.data.mixing import mix_counts

    batch = TrainConfig(method="noisy", dataset="d", model_dir="m").batch_size
    for method in METHODS.values():
        noisy, clean = mix_counts(batch // replicas, method.mix_ratio)
        assert noisy + clean == batch // replicas and batch % replicas == 0, method.name
