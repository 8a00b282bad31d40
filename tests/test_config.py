"""One source for the training configuration: `TrainConfig`'s fields are nlr-train's flags."""

import dataclasses
import os
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


def test_a_binary_without_a_gpu_prints_no_cuda_error_and_a_users_log_level_is_kept(monkeypatch):
    import nlr_tf.cli

    if nlr_tf.cli._has_nvidia_driver():
        pytest.skip("this machine has an NVIDIA driver")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import nlr_tf.cli.train, tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.strip() == "0"
    assert "cuInit" not in out.stderr and "E0000" not in out.stderr, out.stderr
    # The user's own threshold wins.
    code = "import os, nlr_tf.cli; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=dict(env, TF_CPP_MIN_LOG_LEVEL="0")
    )
    assert out.stdout.strip() == "0"
    # A machine with a driver keeps error lines: its CUDA errors are real.
    monkeypatch.setattr(nlr_tf.cli, "_has_nvidia_driver", lambda: True)
    assert nlr_tf.cli._tensorflow_log_level() == "2"


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


def test_every_family_names_a_model_class_and_a_task_and_its_options_are_config_fields():
    from nlr_tf.models.base_model import NoisyLabelModel
    from nlr_tf.models.methods import DATASET_OPTIONS, FAMILIES
    from nlr_tf.training.tasks import get_task

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for family in FAMILIES.values():
        cls = family.model_class()
        assert issubclass(cls, NoisyLabelModel) and cls.family == family.name
        assert set(family.option_names()) <= fields
        assert set(family.model_arguments) <= set(family.option_names()) | set(DATASET_OPTIONS)
        for phase in get_task(family.name).phases:
            assert phase.steps_option in family.option_names() and callable(getattr(cls, f"{phase.name}_step"))


def _family_options():
    from nlr_tf.models.methods import FAMILIES

    return [(family.name, f) for family in FAMILIES.values() for f in family.option_fields()]


@pytest.mark.parametrize("family, option", _family_options(), ids=lambda v: getattr(v, "name", v))
def test_an_option_declared_once_makes_its_field_its_flag_its_help_tag_and_its_check(family, option):
    from nlr_tf.models.methods import FAMILIES
    from nlr_tf.training.checks import _choice_error, _option_readers

    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[option.name]
    spec, declared = field.metadata["flag"], option.metadata["flag"]
    # The field and its flag: the declared default, type and bounds; the help tagged with the family.
    assert field.default == option.default and field.type is option.type
    assert (spec["lower"], spec["upper"]) == (declared["lower"], declared["upper"])
    assert f"{family}: {declared['help'].rstrip('.')}" in spec["help"]
    assert flags.FLAGS[option.name].default == option.default and flags.FLAGS[option.name].help.endswith(spec["help"])
    if declared["choices"] is not None:
        assert set(declared["choices"]) <= set(flags.FLAGS[option.name].parser.enum_values)
    # The check: only the methods of the families that declare it may set it, each within its own choices.
    readers = _option_readers()[option.name]
    declaring = {name for name, f in FAMILIES.items() if option.name in f.option_names()}
    assert readers == [m.name for m in METHODS.values() if m.family in declaring]
    if declared["choices"] is not None:
        method = next(m for m in METHODS.values() if m.family == family)
        other = next((c for c in spec["choices"] if c not in declared["choices"]), None)
        base = TrainConfig(method=method.name, dataset="d", model_dir="m")
        assert _choice_error(base, method) is None
        if other is not None:
            error = _choice_error(dataclasses.replace(base, **{option.name: other}), method)
            assert error == f"--{option.name}={other}: --method={method.name} takes one of " + ", ".join(
                c for c in declared["choices"] if c
            )


def test_serve_is_one_flag_whose_help_and_choices_come_from_both_families():
    assert flags.FLAGS["serve"].parser.enum_values == ["", "g", "h", "visual", "relevance"]
    help_text = flags.FLAGS["serve"].help
    assert "noise_regularization: the output it scores with, g or h" in help_text
    assert "; misra: the output it scores with, visual or relevance (default: visual)." in help_text


def test_families_options_merge_into_flat_fields_and_disagreeing_declarations_are_refused():
    from nlr_tf.models.methods import Family
    from nlr_tf.models.options import option
    from nlr_tf.training.config import family_option_fields

    @dataclasses.dataclass(frozen=True)
    class A:
        mode: str = option("", "mode a.", choices=("", "x"))
        steps: int = option(3, "steps of a.", lower=1)

    @dataclasses.dataclass(frozen=True)
    class B:
        mode: str = option("", "mode b.", choices=("", "y"))

    fields = family_option_fields([Family(name="a", model="m:A", options=A), Family(name="b", model="m:B", options=B)])
    assert list(fields) == ["mode", "steps"]
    type_, mode, first = fields["mode"]
    assert type_ is str and first == "a" and mode.default == ""
    assert mode.metadata["flag"]["help"] == "a: mode a; b: mode b." and mode.metadata["flag"]["choices"] == (
        "",
        "x",
        "y",
    )
    assert fields["steps"][1].metadata["flag"]["lower"] == 1

    @dataclasses.dataclass(frozen=True)
    class C:
        mode: str = option("x", "another default.", choices=("x",))

    with pytest.raises(ValueError, match="option 'mode' of c differs from a's"):
        family_option_fields([Family(name="a", model="m:A", options=A), Family(name="c", model="m:C", options=C)])
    with pytest.raises(ValueError, match="model arguments of d that are no option of it"):
        Family(name="d", model="m:D", options=A, model_arguments=("alpha",))


def test_the_config_keeps_its_field_order_with_the_families_options_in_place():
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    model = names[names.index("init_checkpoint") + 1 : names.index("optimizer")]
    assert model == ["activation", "alpha", "hidden_dim", "serve", "transition", "reference_features", "cleannet_steps"]
    rates = names[names.index("backbone_learning_rate") + 1 : names.index("lr_decay_rate")]
    assert rates == ["cleaning_learning_rate", "cleaning_joint_learning_rate", "cleaning_pretrain_steps"]
    assert TrainConfig.__name__ == "TrainConfig" and TrainConfig.__module__ == "nlr_tf.training.config"


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_the_default_batch_splits_into_every_methods_mix(replicas):
    from nlr_tf.data.mixing import mix_counts

    batch = TrainConfig(method="noisy", dataset="d", model_dir="m").batch_size
    for method in METHODS.values():
        noisy, clean = mix_counts(batch // replicas, method.mix_ratio)
        assert noisy + clean == batch // replicas and batch % replicas == 0, method.name
