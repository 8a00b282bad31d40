"""tf.distribute for real: two logical CPUs, and two worker processes."""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
from cli_util import ROOT
from conftest import write_toy_dataset

from nlr_tf.training.config import TrainConfig
from nlr_tf.training.trainer import train


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy"
    write_toy_dataset(path, {"noisy": 90, "clean": 20}, num_shards=4)
    return str(path)


def _weights(model_dir):
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    return {v.path: v.numpy() for v in model.weights}


@pytest.mark.parametrize(
    "method,extra",
    [
        ("noise_regularization", {"activation": "tanh"}),
        ("label_cleaning", {}),
        ("ft_mixed", {}),
    ],
)
def test_mirrored_on_two_devices_equals_one_device(method, extra, dataset, tmp_path):
    init = tmp_path / "noisy"
    base = dict(
        dataset=dataset,
        image_size=16,
        batch_size=20,
        deterministic=True,
        seed=3,
        log_steps=2,
        checkpoint_steps=100,
        optimizer="sgd",
        learning_rate=0.1,
    )
    train(TrainConfig(method="noisy", model_dir=str(init), train_steps=2, **base))
    runs = {}
    for name, strategy, devices in (("one", "default", ()), ("two", "mirrored", ("/cpu:0", "/cpu:1"))):
        model_dir = str(tmp_path / name)
        result = train(
            TrainConfig(
                method=method,
                model_dir=model_dir,
                train_steps=4,
                strategy=strategy,
                devices=devices,
                init_checkpoint=str(init),
                train_backbone=False,
                **base,
                **extra,
            )
        )
        runs[name] = (result, _weights(model_dir))
    (one, w1), (two, w2) = runs["one"], runs["two"]
    assert w1.keys() == w2.keys()
    for path in w1:
        np.testing.assert_allclose(w2[path], w1[path], rtol=1e-4, atol=1e-5, err_msg=path)
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4)
    # The heads did train (the comparison is not between two untouched models).
    fresh = train(
        TrainConfig(
            method=method,
            model_dir=str(tmp_path / "fresh"),
            train_steps=1,
            init_checkpoint=str(init),
            train_backbone=False,
            **dict(base, learning_rate=1e-12),
            **extra,
        )
    )
    assert fresh["weights_checksum"] != pytest.approx(one["weights_checksum"], rel=1e-6)


def test_mirrored_whole_network_training_equals_one_device(dataset, tmp_path):
    """With a trained backbone too: synchronized BatchNorm sees the global batch on both."""
    base = dict(
        method="noisy",
        dataset=dataset,
        image_size=16,
        batch_size=20,
        deterministic=True,
        seed=5,
        log_steps=3,
        checkpoint_steps=100,
        optimizer="sgd",
        learning_rate=0.05,
        train_steps=3,
    )
    train(TrainConfig(model_dir=str(tmp_path / "one"), **base))
    train(TrainConfig(model_dir=str(tmp_path / "two"), strategy="mirrored", devices=("/cpu:0", "/cpu:1"), **base))
    w1, w2 = _weights(str(tmp_path / "one")), _weights(str(tmp_path / "two"))
    for path in w1:
        np.testing.assert_allclose(w2[path], w1[path], rtol=1e-3, atol=1e-5, err_msg=path)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes_train_and_agree(dataset, tmp_path):
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    model_dir = str(tmp_path / "mwms")
    cmd = [
        sys.executable,
        "-m",
        "nlr_tf.cli.train",
        "--method=noisy",
        f"--dataset={dataset}",
        f"--model_dir={model_dir}",
        "--strategy=multi_worker_mirrored",
        "--backbone=small_cnn",
        "--image_size=16",
        "--batch_size=20",
        "--train_steps=12",
        "--checkpoint_steps=6",
        "--log_steps=3",
    ]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, err[-3000:]
        outputs.append(out)
    checksums = [line for out in outputs for line in out.splitlines() if line.startswith("weights checksum:")]
    assert len(checksums) == 2 and checksums[0] == checksums[1], outputs
    assert all("trained noisy for 12 steps" in out for out in outputs)
    assert os.path.isfile(os.path.join(model_dir, "model.keras"))
    assert sorted(f for f in os.listdir(os.path.join(model_dir, "checkpoints")) if f.endswith(".index")) == [
        "ckpt-12.index",
        "ckpt-6.index",
    ]
    assert not os.path.exists(os.path.join(model_dir, ".workers", "1"))
