"""CleanNet-wsoft (Lee et al. 2018): similarity, losses, soft weights in the train step, and the method from the CLI."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_util import run_cli
from conftest import write_toy_dataset

from nlr_tf.layers.set_attention import SetAttention
from nlr_tf.models.cleannet.model import CleanNetModel
from nlr_tf.models.cleannet.network import CleanNet, cosine, verification_loss
from nlr_tf.training.tasks.cleannet import label_pairs, reference_set, soft_weights, train_cleannet


def test_similarity_is_a_cosine_in_minus_one_to_one():
    a = tf.constant([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = tf.constant([[0.0, 2.0], [-2.0, -2.0], [3.0, 4.0]])
    np.testing.assert_allclose(cosine(a, b).numpy(), [0.0, -1.0, 1.0], atol=1e-6)
    net = CleanNet(num_classes=3, num_references=4, feature_dim=5)
    rng = np.random.default_rng(0)
    net.set_references(rng.normal(size=(3, 4, 5)))
    s = net(rng.normal(size=(50, 5)).astype(np.float32)).numpy()
    assert s.shape == (50, 3) and s.min() >= -1 - 1e-6 and s.max() <= 1 + 1e-6 and s.std() > 0


def test_set_attention_is_a_softmax_weighted_mean():
    layer = SetAttention(2)
    layer.build((None, 3, 2), (None, 3, 2))
    layer.context.assign([1.0, 0.0])
    values = tf.constant([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]])
    keys = tf.constant([[[0.0, 5.0], [np.log(3.0), 0.0], [0.0, -1.0]]])  # scores 0, log 3, 0: weights 1/5, 3/5, 1/5
    np.testing.assert_allclose(layer(values, keys).numpy(), [[0.2 + 0.4, 0.6 + 0.4]], atol=1e-6)


def test_verification_loss_on_hand_made_numbers():
    # correct label: 1 - cos; wrong label: 5 * max(0, cos - 0.1)
    loss = verification_loss(tf.constant([1.0, 1.0, 0.0, 0.0]), tf.constant([0.75, -0.5, 0.3, 0.05]))
    np.testing.assert_allclose(loss.numpy(), [0.25, 1.5, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(soft_weights(np.array([0.75, -0.5, 0.0])), [0.75, 0.0, 0.0])


def test_pairs_and_references():
    labels = {
        "noisy_labels": np.array([[1, 0, 1], [0, 1, 0]], np.float32),
        "verified_labels": np.array([[1, 0, 0], [0, 0, 0]], np.float32),
        "verified_mask": np.array([[1, 0, 1], [0, 0, 0]], np.float32),
    }
    p = label_pairs(labels, verified_only=True)  # image 0's classes 0 (right) and 2 (wrong); image 1 unverified
    assert p["row"].tolist() == [0, 0] and p["cls"].tolist() == [0, 2] and p["correct"].tolist() == [1.0, 0.0]
    assert label_pairs(labels, verified_only=False)["cls"].tolist() == [0, 2, 1]
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    noisy = np.eye(3)[[0, 0, 0, 1, 1, 1]]
    refs = reference_set(features, noisy, num_references=2, seed=0)
    assert refs.shape == (3, 2, 2) and not refs[2].any()  # class 2 has no example: zeros
    assert sorted(refs[0][:, 0].tolist()) == pytest.approx([0.0, 3.0], abs=1.1)  # centres of class 0's features


def _identity_backbone(dim):
    inputs = keras.Input((dim,))
    return keras.Model(inputs, inputs, name="identity")


@pytest.mark.parametrize("multi_label", [False, True], ids=["single_label", "multi_label"])
def test_soft_weights_multiply_the_per_sample_loss(multi_label):
    d = 3
    model = CleanNetModel(_identity_backbone(4), d, multi_label=multi_label)
    rng = np.random.default_rng(0)
    noisy = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    if multi_label:
        noisy[0, 2] = 1
    weights = np.array([[0.5, 0.9, 0.2], [0.3, 0.25, 0.1], [1.0, 1.0, 0.0], [0.8, 0.1, 0.1]], np.float32)
    model.set_label_weights(["a", "b", "c", "x"], weights)
    batch = {
        "features": tf.constant(rng.normal(size=(4, 4)), tf.float32),
        "noisy_labels": tf.constant(noisy),
        "verified_labels": tf.constant(np.eye(d)[[0, 0, 0, 1]], tf.float32),
        "verified_mask": tf.ones((4, d)),
        "is_clean": tf.constant([0, 0, 0, 1]),  # the last is a clean-set example: weight 1
        "id": tf.constant(["a", "b", "c", "x"]),
    }
    logits = model.heads(batch["features"])["logits"].numpy()
    bce = tf.nn.sigmoid_cross_entropy_with_logits(batch["noisy_labels"], logits).numpy()
    bce[3] = tf.nn.sigmoid_cross_entropy_with_logits(batch["verified_labels"], logits).numpy()[3]
    if multi_label:  # a noisily present class's own weight; absent classes 1
        entry = np.where(noisy > 0, weights, 1.0)
    else:  # the noisy class's weight, on every entry of the example
        entry = np.repeat((noisy * weights).sum(1, keepdims=True), d, axis=1)
    entry[3] = 1.0
    expected = (bce * entry).sum() / bce.size  # the mean over entries, each loss times its weight
    model.set_part_optimizers({"classifier": keras.optimizers.SGD(0.0)})
    np.testing.assert_allclose(float(model.train_step(batch)["loss"]), expected, rtol=1e-5)
    unweighted = bce.mean()
    assert abs(expected - unweighted) > 1e-3


def test_cleannet_learns_to_verify_labels_beyond_accepting_them():
    rng = np.random.default_rng(0)
    n, d, f = 1500, 4, 8
    truth = rng.integers(0, d, n)
    x = np.maximum(rng.normal(size=(d, f))[truth] * 2 + rng.normal(size=(n, f)), 0).astype(np.float32)
    noisy = np.where(rng.random(n) < 0.4, rng.integers(0, d, n), truth)
    net = CleanNet(d, 8, f)
    net.set_references(reference_set(x, np.eye(d)[noisy], 8, 0))

    def pairs(rows):
        return x[rows], noisy[rows], (noisy[rows] == truth[rows]).astype(np.float32)

    record = train_cleannet(net, pairs(slice(0, 200)), (x[400:], noisy[400:]), pairs(slice(200, 400)), 600, 0)
    assert record["validation_accuracy"] > record["accepted_accuracy"] + 0.15
    w = soft_weights(net(x[400:]).numpy())[np.arange(n - 400), noisy[400:]]
    right = noisy[400:] == truth[400:]
    assert w[right].mean() > w[~right].mean() + 0.3


def test_cleannet_saves_and_loads_in_safe_mode(tmp_path):
    net = CleanNet(3, 4, 5)
    net.set_references(np.random.default_rng(0).normal(size=(3, 4, 5)))
    net.save(tmp_path / "c.keras")
    again = keras.saving.load_model(tmp_path / "c.keras", safe_mode=True)
    x = np.ones((2, 5), np.float32)
    np.testing.assert_allclose(again(x).numpy(), net(x).numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("cleannet")
    info, _ = write_toy_dataset(root / "toy", {"noisy": 80, "clean": 30, "val": 10}, num_shards=2)
    common = ["--backbone=small_cnn", "--image_size=16", "--batch_size=20", "--log_steps=5", "--checkpoint_steps=5"]
    noisy = root / "noisy"
    proc = run_cli(
        "train", "--method=noisy", f"--dataset={info.path}", f"--model_dir={noisy}", "--train_steps=5", *common
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    features = root / "features"
    proc = run_cli("extract_features", f"--model_dir={noisy}", f"--dataset={info.path}", f"--output_dir={features}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, info, noisy, features, common


@pytest.mark.slow
def test_cleannet_trains_the_whole_network_from_the_cli_and_resumes(toy):
    root, info, noisy, features, common = toy
    run = root / "cn"
    args = [
        "--method=cleannet",
        f"--dataset={info.path}",
        f"--model_dir={run}",
        f"--reference_features={features}",
        "--train_backbone=true",
        "--cleannet_steps=20",
        "--eval_split=val",
        "--eval_steps=5",
        *common,
    ]
    proc = run_cli("train", *args, "--train_steps=5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(run / "cleannet_weights.npz") as f:
        ids, weights = f["ids"], f["weights"]
    assert len(ids) == 80 and weights.shape == (80, info.num_classes) and weights.min() >= 0 and weights.max() <= 1
    result = json.loads((run / "train_result.json").read_text())
    assert result["cleannet_steps"] == 20 and 0 <= result["cleannet_validation_accuracy"] <= 1
    assert (run / "cleannet.keras").is_file()
    proc = run_cli("train", *args, "--train_steps=10")  # resumes, reading the weights back
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(run / "cleannet_weights.npz") as f:
        np.testing.assert_array_equal(f["weights"], weights)
    # Hu Table 4 row 4: the CleanNet model fine-tuned on the clean set.
    proc = run_cli(
        "train", "--method=ft_whole", f"--dataset={info.path}", f"--model_dir={root / 'cn_ft'}",
        f"--init_checkpoint={run}", "--train_steps=5", *common,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cleannet_trains_heads_on_the_feature_cache(toy):
    root, info, noisy, features, common = toy
    proc = run_cli(
        "train", "--method=cleannet", f"--dataset={info.path}", f"--model_dir={root / 'cn_heads'}",
        f"--init_checkpoint={noisy}", f"--feature_cache={features}", "--train_backbone=false", "--cleannet_steps=10",
        "--train_steps=5", *common,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (root / "cn_heads" / "cleannet_weights.npz").is_file()


@pytest.mark.slow
def test_cleannet_configuration_errors(toy, tmp_path):
    root, info, noisy, features, common = toy
    other, _ = write_toy_dataset(tmp_path / "other", {"noisy": 20, "clean": 10}, num_shards=1)
    base = ["--method=cleannet", "--train_steps=5", *common]
    cases = [
        ([f"--dataset={info.path}"], "--method=cleannet embeds the features of a network trained on the noisy labels"),
        (
            [f"--dataset={info.path}", f"--reference_features={info.path}"],
            "is a dataset of images, not a feature cache",
        ),
        ([f"--dataset={other.path}", f"--reference_features={features}"], "holds features of"),
        (
            [f"--dataset={info.path}", f"--reference_features={features}", "--clean_split=clean_all"],
            "learns from the verification labels of split 'clean_all'",
        ),
        ([f"--dataset={info.path}", "--method=noisy", "--cleannet_steps=3"], "applies to --method=cleannet"),
    ]
    for i, (extra, message) in enumerate(cases):
        proc = run_cli("train", *base, *extra, f"--model_dir={tmp_path / f'bad{i}'}")
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
