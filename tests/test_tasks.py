"""The families' training tasks: their checks, their estimates handed to the model, the files they keep."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from nlr_tf.data.parsing import label_arrays
from nlr_tf.models.methods import FAMILIES, METHODS, build_model
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.checks import ConfigError, check_config
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.tasks import Task, get_task
from nlr_tf.training.tasks.cleannet import CleanNetTask
from nlr_tf.training.tasks.confident_learning import ConfidentLearningTask
from nlr_tf.training.tasks.forward import ForwardTask, transition_from_pairs
from nlr_tf.training.tasks.label_cleaning import LabelCleaningTask


def _config(method, dataset="d", model_dir="m", **kwargs):
    return TrainConfig(method=method, dataset=str(dataset), model_dir=str(model_dir), **kwargs)


def _model(method, num_classes, multi_label=True):
    options = {"multi_label": multi_label}
    return build_model(METHODS[method], num_classes, "small_cnn", image_size=16, train_backbone=False, options=options)


def test_every_family_has_a_task_and_only_families_with_work_have_their_own():
    own = {"cleannet": CleanNetTask, "confident_learning": ConfidentLearningTask, "forward": ForwardTask}
    own["label_cleaning"] = LabelCleaningTask
    for family in FAMILIES:
        assert type(get_task(family)) is own.get(family, Task), family
    base = Task()
    assert base.check(_config("noisy"), None) is None and base.part_learning_rates(_config("noisy")) == {}
    assert base.prepare(None, None, _config("noisy")) == {} and base.phases == ()


def test_a_task_refuses_what_its_family_cannot_run_in_one_line(toy_dataset, tmp_path):
    info, _ = toy_dataset
    error = ForwardTask().check(_config("forward", info.path, transition="anchor"), info)
    assert error == "--transition=anchor reads T off a noisy model's predictions: pass --init_checkpoint"
    error = ForwardTask().check(_config("forward", info.path, clean_split="clean_all"), info)
    assert error.startswith("--transition=clean_pairs counts T from the paired labels of split 'clean_all'")
    assert ConfidentLearningTask().check(_config("confident_learning", info.path), info).endswith("--feature_cache")
    assert CleanNetTask().check(_config("cleannet", info.path), info).startswith("--method=cleannet embeds")
    assert ForwardTask().check(_config("forward", info.path), info) is None
    # Through the configuration checks: one line, before anything is written.
    cases = [
        (_config("forward", info.path, tmp_path / "a", transition="anchor"), "--transition=anchor reads T off"),
        (_config("noise_regularization", info.path, tmp_path / "b", serve="visual"), "--serve=visual: --method="),
        (_config("misra", info.path, tmp_path / "c", serve="h"), "--serve=h: --method=misra takes one of visual"),
        (_config("misra", info.path, tmp_path / "d", transition="anchor"), "--transition applies to --method=forward"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError) as raised:
            check_config(config)
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_label_cleaning_task_schedules_pretraining_and_the_cleaning_rates():
    task = LabelCleaningTask()
    assert [p.name for p in task.phases] == ["pretrain"] and task.phases[0].steps_option == "cleaning_pretrain_steps"
    joint = task.part_learning_rates(_config("label_cleaning", cleaning_learning_rate=0.5))
    assert joint == {"cleaning": 0.5}
    config = _config("label_cleaning", cleaning_pretrain_steps=10, cleaning_learning_rate=0.5)
    schedule = task.part_learning_rates(dataclasses.replace(config, cleaning_joint_learning_rate=0.25))["cleaning"]
    assert float(schedule(9)) == 0.5 and float(schedule(11)) == 0.25


def test_forward_task_hands_the_model_the_t_it_counts_and_a_resumed_run_keeps_the_restored_one(toy_dataset):
    info, _ = toy_dataset
    model = _model("forward", info.num_classes)
    record = ForwardTask().prepare(model, info, _config("forward", info.path))
    labels = label_arrays(info.split_files("clean"), info.num_classes)
    expected = transition_from_pairs(
        labels["noisy_labels"], labels["verified_labels"], labels["verified_mask"], multi_label=True
    )
    assert record["transition_source"] == "clean_pairs"
    np.testing.assert_allclose(record["transition"], expected)
    np.testing.assert_allclose(model.noise_transition.transition.numpy(), expected)
    model.set_transition(np.zeros_like(expected))
    assert ForwardTask().prepare(model, info, _config("forward", info.path), resumed=True) == {}
    assert not model.noise_transition.transition.numpy().any()


def test_confident_learning_task_reads_its_issues_back_from_the_model_dir(tmp_path):
    record = {"num_noisy": 3, "num_issues": 1, "folds": 5, "ids": ["b"]}
    run_files.write_label_issues(str(tmp_path), record)
    assert (tmp_path / "label_issues.json").is_file() and run_files.read_label_issues(str(tmp_path)) == record
    model = _model("confident_learning", 2)
    out = ConfidentLearningTask().prepare(model, None, _config("confident_learning", model_dir=tmp_path), resumed=True)
    assert out == {"label_issues": 1, "noisy_examples": 3, "label_issues_estimated": False}  # read back, not fit
    np.testing.assert_array_equal(model.issues(tf.constant(["a", "b"])).numpy()[:, 0], [0.0, 1.0])


def test_cleannet_task_reads_its_label_weights_back_and_refuses_another_class_count(tmp_path):
    weights = np.array([[0.5, 1.0, 0.0], [0.25, 0.0, 1.0]], np.float32)
    run_files.write_label_weights(str(tmp_path), ["x", "y"], weights)
    assert (tmp_path / "cleannet_weights.npz").is_file()
    model = _model("cleannet", 3)
    assert CleanNetTask().prepare(model, None, _config("cleannet", model_dir=tmp_path), resumed=True) == {}
    np.testing.assert_allclose(model.label_weights(tf.constant(["y", "z"])).numpy(), [[0.25, 0.0, 1.0], [1, 1, 1]])
    with pytest.raises(ValueError, match="cleannet_weights.npz holds weights of 3 classes, not 4"):
        CleanNetTask().prepare(_model("cleannet", 4), None, _config("cleannet", model_dir=tmp_path), resumed=True)


def test_the_files_families_keep_keep_their_names():
    """Runs written before still resume: the model dir's names of the families' files."""
    names = (run_files.LABEL_ISSUES_FILE, run_files.LABEL_WEIGHTS_FILE, run_files.CLEANNET_FILE)
    assert names == ("label_issues.json", "cleannet_weights.npz", "cleannet.keras")
