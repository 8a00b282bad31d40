"""Mixed precision (Keras dtype policies, loss scaling) and XLA, on CPU."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import write_toy_dataset

from nlr_tf.backbones.networks import build_backbone
from nlr_tf.export.serving import export_saved_model
from nlr_tf.models.methods import build_model, get_method
from nlr_tf.models.precision import apply_precision, backbone_precision
from nlr_tf.models.prediction import predict
from nlr_tf.training.checks import ConfigError
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.model_dir import load_trained_model
from nlr_tf.training.trainer import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    write_toy_dataset(path, {"noisy": 90, "clean": 20, "val": 12}, num_shards=2)
    return str(path)


def _base(dataset, **kwargs):
    return dict(
        dict(
            method="noisy",
            dataset=dataset,
            image_size=16,
            batch_size=20,
            seed=3,
            deterministic=True,
            log_steps=10,
            checkpoint_steps=100,
            optimizer="sgd",
            learning_rate=0.05,
        ),
        **kwargs,
    )


def _tracked_losses(model_dir):
    """The `losses/loss` scalars the trainer wrote, in step order."""
    values = []
    for name in sorted(os.listdir(os.path.join(model_dir, "train"))):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, "train", name)):
            for value in event.summary.value:
                if value.tag == "losses/loss":
                    values.append((event.step, float(tf.make_ndarray(value.tensor))))
    return [v for _, v in sorted(values)]


@pytest.mark.parametrize("method", ["noisy", "label_cleaning", "noise_regularization"])
def test_the_policy_reaches_the_backbone_and_the_outputs_stay_float32(method):
    model = build_model(get_method(method), 5, "small_cnn", image_size=16, options={"multi_label": True})
    apply_precision(model, "mixed_bfloat16")
    assert backbone_precision(model) == "mixed_bfloat16"
    convs = [layer for layer in model.backbone._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    # Variables stay float32 under every policy.
    assert {v.dtype for v in model.weights} == {"float32"}
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    features = model.backbone(images)
    assert features.dtype == "bfloat16"  # the backbone computes in bfloat16 ...
    outputs = model(images)
    assert {k: v.dtype for k, v in outputs.items()} == {k: "float32" for k in outputs}  # ... the heads in float32
    extra = model.extra_output_values({"noisy_labels": tf.ones((2, 5))}, features)
    assert all(v.dtype == "float32" for v in extra.values())
    # Back to float32: the same weights, float32 everywhere.
    apply_precision(model, "none")
    assert backbone_precision(model) == "none"
    assert model.backbone(images).dtype == "float32"


def test_bfloat16_and_float16_runs_track_float32_at_the_same_seed(dataset, tmp_path):
    runs = {}
    for precision in ("none", "mixed_bfloat16", "mixed_float16"):
        model_dir = str(tmp_path / precision)
        result = train(TrainConfig(model_dir=model_dir, train_steps=50, mixed_precision=precision, **_base(dataset)))
        runs[precision] = (result, _tracked_losses(model_dir))
    reference = runs["none"][1]
    assert len(reference) == 5 and reference[-1] < 0.8 * reference[0]  # it trained
    for precision in ("mixed_bfloat16", "mixed_float16"):
        losses = runs[precision][1]
        np.testing.assert_allclose(losses, reference, rtol=0.03, err_msg=precision)
    # mixed_float16: each part's optimizer scales the loss; the scale is checkpointed with it.
    reader = tf.train.load_checkpoint(str(tmp_path / "mixed_float16" / "checkpoints"))
    scales = [name for name in reader.get_variable_to_shape_map() if "dynamic_scale" in name]
    assert len(scales) == 2, scales  # backbone and classifier
    model, _ = load_trained_model(str(tmp_path / "mixed_bfloat16"))
    assert backbone_precision(model) == "none"  # loaded for float32 use unless asked


def test_a_float16_run_resumes_and_refuses_another_precision(dataset, tmp_path):
    config = TrainConfig(
        model_dir=str(tmp_path / "run"), train_steps=4, mixed_precision="mixed_float16", **_base(dataset)
    )
    train(config)
    with pytest.raises(ConfigError, match="mixed_precision='mixed_float16', not 'none'"):
        train(TrainConfig(**dict(config.__dict__, mixed_precision="none", train_steps=6)))
    assert train(TrainConfig(**dict(config.__dict__, train_steps=6)))["step"] == 6


def test_export_of_a_mixed_precision_model_serves_float32(dataset, tmp_path):
    train(
        TrainConfig(model_dir=str(tmp_path / "run"), train_steps=2, mixed_precision="mixed_bfloat16", **_base(dataset))
    )
    model, run_config = load_trained_model(str(tmp_path / "run"))
    export_saved_model(model, str(tmp_path / "export"), image_size=16, class_names=run_config["class_names"])
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    images = tf.random.uniform((3, 16, 16, 3), 0, 255, seed=1)
    served = loaded.signatures["serve_images"](images=images)
    assert served["scores"].dtype == tf.float32
    np.testing.assert_allclose(served["scores"].numpy(), model(images)["scores"].numpy(), atol=1e-6)


def test_a_compiled_training_step_equals_an_uncompiled_one(dataset, tmp_path):
    weights = {}
    for jit in (False, True):
        model_dir = str(tmp_path / f"jit_{jit}")
        config = TrainConfig(model_dir=model_dir, train_steps=1, jit_compile=jit, **_base(dataset, log_steps=1))
        train(config)
        model, _ = load_trained_model(model_dir)
        weights[jit] = {v.path: v.numpy() for v in model.weights}
    assert weights[True].keys() == weights[False].keys()
    for path, value in weights[False].items():
        np.testing.assert_allclose(weights[True][path], value, rtol=1e-4, atol=1e-5, err_msg=path)
    # The step did move the weights (the trainer seeds the initialization with --seed).
    keras.utils.set_random_seed(3)
    initial = build_model(get_method("noisy"), 5, "small_cnn", image_size=16, options={"multi_label": True})
    moved = [np.abs(weights[True][v.path] - v.numpy()).max() for v in initial.trainable_weights]
    assert max(moved) > 1e-3 and min(moved) > 0


def test_compiled_label_cleaning_and_evaluation_equal_uncompiled(dataset, tmp_path):
    """Label cleaning trains with a cleaning net and a c-hat output: both steps compile; predictions agree."""
    train(TrainConfig(model_dir=str(tmp_path / "noisy"), train_steps=2, **_base(dataset)))
    results = {}
    for jit in (False, True):
        model_dir = str(tmp_path / f"lc_{jit}")
        config = _base(dataset, method="label_cleaning", init_checkpoint=str(tmp_path / "noisy"))
        config.update(eval_split="val", eval_steps=2, jit_compile=jit)
        results[jit] = train(TrainConfig(model_dir=model_dir, train_steps=4, **config))
    assert results[True]["loss"] == pytest.approx(results[False]["loss"], rel=1e-4)
    model, run_config = load_trained_model(str(tmp_path / "lc_False"))
    from nlr_tf.data.schema import load_dataset_info

    info = load_dataset_info(dataset)
    plain = predict(model, info, "val", backbone="small_cnn", image_size=16)
    compiled = predict(model, info, "val", backbone="small_cnn", image_size=16, jit_compile=True)
    for key in ("scores", "cleaned"):
        np.testing.assert_allclose(compiled[key], plain[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_xla_on_several_cpu_replicas_is_refused_in_one_line(dataset, tmp_path):
    config = TrainConfig(
        model_dir=str(tmp_path / "two"),
        train_steps=2,
        strategy="mirrored",
        devices=("/cpu:0", "/cpu:1"),
        jit_compile=True,
        **_base(dataset),
    )
    with pytest.raises(ConfigError, match="XLA cannot compile the all-reduces"):
        train(config)
    assert not os.path.exists(config.model_dir)


def test_backbone_alone_takes_a_policy():
    backbone = build_backbone("small_cnn", image_size=16, trainable=False)
    apply_precision(backbone, "mixed_float16")
    assert backbone(np.zeros((1, 16, 16, 3), np.float32)).dtype == "float16"
    with pytest.raises(ValueError, match="unknown precision"):
        apply_precision(backbone, "float8")


def test_loss_scaling_under_mirrored_equals_one_device(dataset, tmp_path):
    """mixed_float16 on two replicas: each part's LossScaleOptimizer unscales all-reduced gradients."""
    weights = {}
    for name, strategy, devices in (("one", "default", ()), ("two", "mirrored", ("/cpu:0", "/cpu:1"))):
        model_dir = str(tmp_path / name)
        config = _base(dataset, log_steps=2, strategy=strategy, devices=devices, mixed_precision="mixed_float16")
        train(TrainConfig(model_dir=model_dir, train_steps=4, **config))
        model, _ = load_trained_model(model_dir)
        weights[name] = {v.path: v.numpy() for v in model.weights}
    # float16 arithmetic differs between one batch of 20 and two of 10: compare the updates, not bits. The
    # first layers' small gradients carry float16's rounding (their update differs by about 10 % between one and
    # two replicas, and by about 12 % between float16 and float32 on one device); the classifier's by 3e-4.
    keras.utils.set_random_seed(3)
    initial = build_model(get_method("noisy"), 5, "small_cnn", image_size=16, options={"multi_label": True})
    for v in initial.trainable_weights:
        one, two = weights["one"][v.path] - v.numpy(), weights["two"][v.path] - v.numpy()
        assert np.linalg.norm(one) > 0, v.path
        bound = 0.01 if v.path.startswith("classifier") else 0.25
        assert np.linalg.norm(two - one) <= bound * np.linalg.norm(one), v.path
