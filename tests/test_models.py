"""Method models: which loss reaches which weights, masking, saving."""

import inspect
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from nlr_tf.backbones.networks import build_backbone, small_cnn
from nlr_tf.models.methods import FAMILIES, METHODS, build_model

D = 6
FEATURE_DIM = small_cnn(16).output.shape[-1]


def _batch(seed=0, batch=10, clean=2, feature_dim=FEATURE_DIM):
    rng = np.random.default_rng(seed)
    is_clean = np.r_[np.zeros(batch - clean), np.ones(clean)].astype(np.float32)
    mask = (rng.random((batch, D)) < 0.5).astype(np.float32) * is_clean[:, None]
    return {
        "features": tf.constant(rng.normal(size=(batch, feature_dim)), tf.float32),
        "noisy_labels": tf.constant(rng.random((batch, D)) < 0.4, tf.float32),
        "verified_labels": tf.constant((rng.random((batch, D)) < 0.4) * mask, tf.float32),
        "verified_mask": tf.constant(mask),
        "is_clean": tf.constant(is_clean),
    }


def _model(method, **options):
    return build_model(METHODS[method], D, "small_cnn", image_size=16, train_backbone=False, options=options)


def _grads(loss_fn, variables):
    with tf.GradientTape() as tape:
        loss = loss_fn()
    return tape.gradient(loss, variables)


def _reaches(grads):
    return any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_label_cleaning_losses_reach_only_their_parts():
    keras.utils.set_random_seed(0)
    model = _model("label_cleaning")
    # Start the cleaning network away from the identity so every path carries gradient. c = clip(y + g', 0, 1)
    # passes gradient only where it is not clipped: enough verified entries (about 30) that some are not.
    model.cleaning.residual.kernel.assign(tf.random.normal(model.cleaning.residual.kernel.shape, stddev=0.1))
    batch = _batch(batch=20, clean=10)
    cleaning, classifier = model.part_variables("cleaning"), model.part_variables("classifier")
    clean_grads = _grads(lambda: model.losses_on_batch(batch)[0], cleaning + classifier)
    assert _reaches(clean_grads[: len(cleaning)]) and not _reaches(clean_grads[len(cleaning) :])
    classify_grads = _grads(lambda: model.losses_on_batch(batch)[1], cleaning + classifier)
    # stop-gradient: the classifier loss never reaches the cleaning network.
    assert not _reaches(classify_grads[: len(cleaning)]) and _reaches(classify_grads[len(cleaning) :])


def test_noise_regularization_clean_loss_skips_the_residual_net():
    model = _model("noise_regularization", activation="relu")
    batch = _batch()
    heads = model.clean_residual
    clean_net = heads.clean_hidden.trainable_variables + heads.clean_output.trainable_variables
    residual_net = heads.residual_hidden.trainable_variables + heads.residual_output.trainable_variables
    grads = _grads(lambda: model.losses_on_batch(batch)[0], clean_net + residual_net)
    assert _reaches(grads[: len(clean_net)]) and not _reaches(grads[len(clean_net) :])
    grads = _grads(lambda: model.losses_on_batch(batch)[1], clean_net + residual_net)
    assert _reaches(grads[: len(clean_net)]) and _reaches(grads[len(clean_net) :])


@pytest.mark.parametrize("method", ["noise_regularization", "label_cleaning", "ft_mixed"])
def test_unverified_entries_send_no_gradient_and_do_not_count(method):
    model = _model(method)
    batch = _batch()
    flipped = dict(batch)  # change every unverified entry of the clean examples
    unverified = batch["is_clean"][:, None] * (1.0 - batch["verified_mask"])
    flipped["verified_labels"] = batch["verified_labels"] + unverified * (1.0 - 2.0 * batch["verified_labels"])
    assert float(tf.reduce_sum(tf.abs(flipped["verified_labels"] - batch["verified_labels"]))) > 0
    variables = model.trainable_variables

    # The model's own train step: equal losses, and (from equal weights, with plain SGD) equal updates.
    start = [v.numpy().copy() for v in variables]
    results = []
    for b in (batch, flipped):
        for v, w in zip(variables, start):
            v.assign(w)
        trained = [p for p in model.part_layers() if model.part_variables(p)]
        model.set_part_optimizers({p: keras.optimizers.SGD(0.5) for p in trained})
        losses = {k: float(v) for k, v in model.train_step(b).items()}
        results.append((losses, [v.numpy().copy() for v in variables]))
    (losses_a, after_a), (losses_b, after_b) = results
    assert losses_a == pytest.approx(losses_b, rel=1e-6)
    assert any(not np.array_equal(a, w) for a, w in zip(after_a, start))  # the step did train
    for a, b in zip(after_a, after_b):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_clean_loss_ignores_noisy_examples_and_noise_loss_ignores_clean_ones():
    model = _model("noise_regularization")
    batch = _batch()
    logits_var = tf.Variable(tf.zeros((10, D)))
    from nlr_tf.models.losses import masked_bce_with_logits

    _, noisy_mask, clean_mask = model.split_masks(batch, D)
    with tf.GradientTape(persistent=True) as tape:
        clean = masked_bce_with_logits(batch["verified_labels"], logits_var, clean_mask)
        noise = masked_bce_with_logits(batch["noisy_labels"], logits_var, noisy_mask)
    g_clean, g_noise = tape.gradient(clean, logits_var).numpy(), tape.gradient(noise, logits_var).numpy()
    assert np.all(g_clean[:8] == 0) and np.all(g_clean[8:][batch["verified_mask"].numpy()[8:] == 0] == 0)
    assert np.all(g_noise[8:] == 0) and np.all(g_noise[:8] != 0)


def test_frozen_backbone_keeps_batchnorm_in_inference_mode():
    model = build_model(METHODS["ft_last"], D, "small_cnn", image_size=16, train_backbone=False)
    images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(np.float32)
    before = [v.numpy().copy() for v in model.backbone.non_trainable_variables]
    a = model(images, training=True)["scores"].numpy()
    b = model(images, training=False)["scores"].numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    for v, w in zip(model.backbone.non_trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), w)
    assert not model.backbone.trainable_variables


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_model_saves_and_loads_in_safe_mode(method, tmp_path):
    model = _model(method)
    images = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype(np.float32)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    as_json = lambda m: json.loads(json.dumps(m.get_config()))  # noqa: E731  (tuples and lists alike)
    assert type(loaded) is type(model) and as_json(loaded) == as_json(model)
    assert loaded.backbone.trainable == model.backbone.trainable
    out, out_loaded = model(images), loaded(images)
    assert set(out) == set(out_loaded) and "scores" in out
    for name in out:
        np.testing.assert_allclose(out_loaded[name].numpy(), out[name].numpy(), atol=1e-6)
    scores = out["scores"].numpy()
    assert scores.shape == (3, D) and scores.min() >= 0 and scores.max() <= 1


def test_noise_regularization_serves_g_unless_h_is_trained_alone():
    batch = _batch()
    for alpha, use_noisy, served in ((0.2, True, "g"), (0.0, True, "h"), (0.0, False, "g")):
        method = "noise_regularization" if use_noisy else "g_only"
        model = _model(method, alpha=alpha)
        assert model.serve == served and model.get_config()["serve"] == served
        out = model.heads(batch["features"])
        logits = out["clean_logits"] if served == "g" else out["noisy_logits"]  # c, or c + r
        np.testing.assert_allclose(out["scores"], tf.sigmoid(logits), atol=1e-6)
    copy = type(model).from_config(dict(model.get_config(), serve="h"))
    assert copy.serve == "h"
    with pytest.raises(ValueError, match="`serve` must be one of"):
        type(model).from_config(dict(model.get_config(), serve="c"))


def test_g_alone_trains_c_only_and_asks_no_gradient_of_the_residual_net():
    model = _model("g_only")
    model.set_part_optimizers({"heads": keras.optimizers.Adam(0.05)})
    heads = model.clean_residual
    residual = [w.numpy().copy() for w in heads.residual_hidden.weights + heads.residual_output.weights]
    clean_weights = heads.clean_hidden.weights + heads.clean_output.weights
    clean = [w.numpy().copy() for w in clean_weights]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns of variables without gradients
        model.train_step(dict(_batch()))
    for before, w in zip(residual, heads.residual_hidden.weights + heads.residual_output.weights):
        np.testing.assert_array_equal(before, w.numpy())
    assert any(
        not np.array_equal(b, w.numpy()) for b, w in zip(clean, heads.clean_hidden.weights + heads.clean_output.weights)
    )
    copy = type(model).from_config(model.get_config())
    assert not copy.clean_residual.residual_output.trainable and copy.clean_residual.clean_output.trainable


@pytest.mark.parametrize("train_backbone", [False, True], ids=["frozen_backbone", "trained_backbone"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_train_steps_move_every_trained_part_and_leave_frozen_ones_alone(method, train_backbone):
    model = build_model(METHODS[method], D, "small_cnn", image_size=16, train_backbone=train_backbone)
    parts = [p for p in model.part_layers() if model.part_variables(p)]
    assert ("backbone" in parts) == train_backbone
    model.set_part_optimizers({p: keras.optimizers.Adam(0.05) for p in parts})
    batch = dict(_batch(batch=20, clean=10))
    del batch["features"]
    batch["image"] = tf.random.uniform((20, 16, 16, 3), 0, 255, seed=3)
    every = {p: layers for p, layers in model.part_layers().items()}
    before = {p: [w.numpy().copy() for layer in layers for w in layer.weights] for p, layers in every.items()}
    for _ in range(3):
        model.train_step(batch)
    for part, layers in every.items():
        after = [w.numpy() for layer in layers for w in layer.weights]
        moved = any(not np.array_equal(a, b) for a, b in zip(before[part], after))
        # A trained part moves; a frozen backbone keeps its weights and its BatchNorm statistics.
        assert moved == (part in parts), (method, part)


OUTPUTS = {
    "classifier": {"scores", "logits"},
    "label_cleaning": {"scores", "logits"},
    "noise_regularization": {"scores", "clean_logits", "noisy_logits"},
    "forward": {"scores", "logits"},
    "misra": {"scores", "visual_scores", "relevance_scores"},
    "confident_learning": {"scores", "logits"},
    "cleannet": {"scores", "logits"},
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_model_is_one_functional_graph_with_named_outputs(method):
    model = _model(method)
    family = METHODS[method].family
    images = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype(np.float32)
    out = model(images)
    assert set(out) == OUTPUTS[family] and out["scores"].shape == (2, D)
    # The heads are a model of their own, features -> the same outputs: what feature-cache training calls.
    features = model.backbone(images)
    from_heads = model.heads(features)
    for name in out:
        np.testing.assert_allclose(from_heads[name].numpy(), out[name].numpy(), atol=1e-6)
    # The summary shows the whole network, heads included, with their shapes.
    lines = []
    model.summary(expand_nested=True, print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    head_layer = {
        "classifier": "classifier",
        "label_cleaning": "classifier",
        "noise_regularization": "clean_residual",
        "forward": "classifier",
        "misra": "relevance",
        "confident_learning": "classifier",
        "cleannet": "classifier",
    }
    assert "backbone" in text and "heads" in text and head_layer[family] in text and f"(None, {D})" in text
    if family == "label_cleaning":  # c-hat, which needs the noisy labels: the model's extra output
        assert model.extra_outputs == ("cleaned",)
        cleaned = model.extra_output_values({"noisy_labels": tf.ones((2, D))}, features)["cleaned"]
        assert cleaned.shape == (2, D) and float(tf.reduce_min(cleaned)) >= 0 and float(tf.reduce_max(cleaned)) <= 1
    else:
        assert model.extra_outputs == () and model.extra_output_values({}, features) == {}


def test_a_run_saved_before_functional_models_is_refused_with_a_clear_error(tmp_path):
    from nlr_tf.training.model_dir import MODEL_FORMAT, CheckpointError, load_trained_model

    _model("noisy").save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"backbone": "small_cnn"}))  # no model_format: written before
    with pytest.raises(CheckpointError, match="saved by an earlier nlr_tf.*--init_checkpoint"):
        load_trained_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"backbone": "small_cnn", "model_format": MODEL_FORMAT}))
    model, _ = load_trained_model(str(tmp_path))
    assert model.heads.name == "heads"


def test_a_model_with_non_finite_weights_is_refused(tmp_path):
    from nlr_tf.training.model_dir import MODEL_FORMAT, CheckpointError, load_trained_model

    model = _model("noisy")
    kernel = model.classifier.kernel
    kernel.assign(np.where(np.arange(kernel.shape[1]) == 0, np.nan, kernel.numpy()).astype(np.float32))
    model.save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"backbone": "small_cnn", "model_format": MODEL_FORMAT}))
    with pytest.raises(CheckpointError, match="holds non-finite weights .*classifier/kernel.*: the run diverged"):
        load_trained_model(str(tmp_path))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_model_class_is_built_from_its_arguments_alone_and_asks_for_no_training_config(family):
    cls = FAMILIES[family].model_class()
    # What a model never had to do: read the TrainConfig, check it, estimate from data, write files, schedule phases.
    for hook in ("config_error", "fit_before_training", "training_options", "part_learning_rates", "phases"):
        assert not hasattr(cls, hook), (family, hook)
    params = inspect.signature(cls.__init__).parameters
    assert "config" not in params and set(FAMILIES[family].model_arguments) <= set(params)
    model = cls(build_backbone("small_cnn", image_size=16, trainable=False), D)
    assert model(np.zeros((1, 16, 16, 3), np.float32))["scores"].shape == (1, D)
    assert set(model.get_config()) <= set(params) | {"name", "trainable"}


def test_models_take_their_estimates_through_setters_that_check_them():
    cleannet, forward = _model("cleannet"), _model("forward")
    with pytest.raises(ValueError, match=r"`weights` must have shape \(2, 6\). Received: weights.shape=\(2, 5\)"):
        cleannet.set_label_weights(["a", "b"], np.ones((2, 5)))
    with pytest.raises(ValueError, match="T must have shape"):
        forward.set_transition(np.zeros((3, D)))
    confident = _model("confident_learning")
    confident.set_label_issues(["a"])
    assert confident.issues(tf.constant(["a", "b"])).numpy()[:, 0].tolist() == [1.0, 0.0]
