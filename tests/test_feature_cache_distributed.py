"""Feature caches made past one device hold what the one-device cache holds, and nlr-train trains on them.

Split sizes leave partial last batches, a last step where one replica
has no batch, and a one-record split that one worker reads nothing of:
every record must still be written exactly once.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
from cli_util import ROOT
from conftest import write_toy_dataset

from nlr_tf.backbones.networks import build_backbone
from nlr_tf.data import schema
from nlr_tf.data.feature_cache import extract_features, read_split
from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.strategies import get_strategy
from nlr_tf.training.trainer import train

SPLITS = {"noisy": 37, "clean": 9, "val": 5, "test": 1}
LABELS = ("noisy_labels", "verified_labels", "verified_mask")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The toy dataset, the backbone's weights file and the one-device cache of them."""
    root = tmp_path_factory.mktemp("fcd")
    info, _ = write_toy_dataset(root / "toy", SPLITS, num_shards=3, with_true=True)
    backbone = build_backbone("small_cnn", image_size=16, trainable=False)
    weights = str(root / "backbone.weights.h5")
    backbone.get_layer("small_cnn").save_weights(weights)  # as nlr-pretext writes them
    one = extract_features(backbone, info, str(root / "one"), **_options(weights))
    return root, info, weights, one


def _options(weights):
    return dict(
        backbone_name="small_cnn", backbone_source=weights, image_size=16, batch_size=8, num_shards=3, progress=False
    )


def _assert_same_records(got: schema.DatasetInfo, want: schema.DatasetInfo) -> None:
    """Every record of `want` once in `got` (by id), with the same labels and features within float tolerance."""
    assert got.provenance == want.provenance and set(got.splits) == set(want.splits) == set(SPLITS)
    on_disk = {schema.DATASET_JSON, schema.LABEL_MAP_JSON}
    for split in SPLITS:
        assert got.splits[split].num_records == want.splits[split].num_records == SPLITS[split]
        on_disk.update(got.splits[split].files)
        a, b = read_split(want, split), read_split(got, split)  # read_split checks the counts of dataset.json
        assert len(set(b["id"])) == len(b["id"]) == SPLITS[split]  # no record twice, none lost
        at = {image_id: i for i, image_id in enumerate(b["id"])}
        order = [at[image_id] for image_id in a["id"]]
        np.testing.assert_allclose(b["features"][order], a["features"], rtol=1e-5, atol=1e-6)
        for key in LABELS:
            np.testing.assert_array_equal(b[key][order], a[key], err_msg=key)
        # The label lists as stored, true labels included.
        rows = {r["id"]: r for r in iterate_label_lists(want.split_files(split))}
        assert {r["id"]: r for r in iterate_label_lists(got.split_files(split))} == rows
    assert sorted(os.listdir(got.path)) == sorted(on_disk)  # no shard left out of dataset.json
    assert not [n for n in os.listdir(os.path.dirname(got.path)) if ".incomplete-" in n]


def _train_on(cache: schema.DatasetInfo, info: schema.DatasetInfo, weights: str, model_dir: str) -> None:
    stamp = os.path.getmtime(os.path.join(cache.path, schema.DATASET_JSON))
    result = train(
        TrainConfig(
            method="noise_regularization",
            dataset=info.path,
            model_dir=model_dir,
            backbone="small_cnn",
            backbone_weights=weights,
            image_size=16,
            train_backbone=False,
            feature_cache=cache.path,
            batch_size=10,
            train_steps=3,
            log_steps=3,
        )
    )
    assert result["step"] == 3 and np.isfinite(result["loss"])
    assert os.path.getmtime(os.path.join(cache.path, schema.DATASET_JSON)) == stamp  # read, not built again


def test_nlr_train_under_mirrored_builds_its_missing_cache_as_one_device_does(made, tmp_path, monkeypatch):
    root, info, weights, one = made
    from nlr_tf.training import setup

    replicas = []

    def extract(*args, **kwargs):  # the real extraction, noting the replicas it ran on
        replicas.append(kwargs["strategy"].num_replicas_in_sync)
        return extract_features(*args, **kwargs)

    monkeypatch.setattr(setup, "extract_features", extract)
    config = TrainConfig(
        method="noise_regularization",
        dataset=info.path,
        model_dir=str(tmp_path / "run"),
        backbone="small_cnn",
        backbone_weights=weights,
        image_size=16,
        train_backbone=False,
        feature_cache=str(tmp_path / "cache"),
        batch_size=20,
        train_steps=2,
        log_steps=2,
        strategy="mirrored",
        devices=("/cpu:0", "/cpu:1"),
    )
    assert train(config)["step"] == 2
    assert replicas == [2]  # the backbone ran on both devices
    built = schema.load_dataset_info(str(tmp_path / "cache"))
    for split in ("noisy", "clean"):  # the splits the method reads
        a, b = read_split(one, split), read_split(built, split)
        at = {image_id: i for i, image_id in enumerate(b["id"])}
        assert sorted(at) == sorted(a["id"])
        order = [at[image_id] for image_id in a["id"]]
        np.testing.assert_allclose(b["features"][order], a["features"], rtol=1e-5, atol=1e-6)


def test_a_cache_made_on_two_devices_is_the_one_device_cache(made):
    root, info, weights, one = made
    strategy = get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        backbone = build_backbone("small_cnn", weights, 16, trainable=False)
    two = extract_features(backbone, info, str(root / "two"), strategy=strategy, **_options(weights))
    assert two.splits["noisy"].num_shards == 3  # one process writes the shards asked for
    _assert_same_records(two, one)
    _train_on(two, info, weights, str(root / "run_two"))
    with pytest.raises(ValueError, match="batch_size=7 does not split over 2 replicas"):
        extract_features(backbone, info, str(root / "odd"), strategy=strategy, **{**_options(weights), "batch_size": 7})


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_workers(args, timeout=300):
    """Runs nlr-extract-features as both workers of a two-worker cluster on localhost; returns their processes."""
    workers = [f"localhost:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
        command = [sys.executable, "-m", "nlr_tf.cli.extract_features", "--strategy=multi_worker_mirrored", *args]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return done


def _worker_args(info, weights, output):
    return [
        f"--dataset={info.path}",
        f"--output_dir={output}",
        "--backbone=small_cnn",
        f"--backbone_weights={weights}",
        "--image_size=16",
        "--batch_size=8",
        "--num_shards=3",
        "--quiet",
    ]


def test_a_cache_made_by_two_worker_processes_is_the_one_device_cache(made):
    root, info, weights, one = made
    output = root / "workers"
    chief, other = _run_workers(_worker_args(info, weights, output))
    assert chief.returncode == 0 and other.returncode == 0, chief.stderr[-3000:] + other.stderr[-3000:]
    counts = "clean=9, noisy=37, test=1, val=5"
    assert chief.stdout.startswith(f"wrote {output}: 64-d features (float32)") and counts in chief.stdout
    assert other.stdout.startswith(f"worker 1: the chief wrote {output}") and counts in other.stdout
    cache = schema.load_dataset_info(str(output))
    _assert_same_records(cache, one)
    # Each worker wrote its own shards, two of the four: shards 0-1 are worker 0's, 2-3 worker 1's.
    assert cache.splits["noisy"].files == [schema.shard_name("noisy", i, 4) for i in range(4)]
    assert cache.splits["test"].files == ["test-00000-of-00004.tfrecord"]  # worker 1 read no record of it
    _train_on(cache, info, weights, str(root / "run_workers"))


def test_two_worker_processes_stop_together_and_leave_no_cache(made, tmp_path):
    _, info, weights, one = made
    output = tmp_path / "cache"
    shutil.copytree(one.path, output)
    # The chief cannot replace the cache without --overwrite: both workers stop with its reason.
    chief, other = _run_workers(_worker_args(info, weights, output))
    assert chief.returncode == 1 and "already exists (pass --overwrite to replace it)" in chief.stderr
    assert other.returncode == 1 and "the chief cannot write" in other.stderr and "already exists" in other.stderr
    # A feature beyond float16's range: the workers read on to the barrier, then all stop; the old cache stays.
    huge = build_backbone("small_cnn", weights, 16, trainable=False)
    last_norm = huge.get_layer("small_cnn").get_layer("bn2_1")
    last_norm.beta.assign(np.full(last_norm.beta.shape, 1e6, np.float32))
    huge.get_layer("small_cnn").save_weights(str(tmp_path / "huge.weights.h5"))
    args = _worker_args(info, tmp_path / "huge.weights.h5", output)
    chief, other = _run_workers([*args, "--cache_dtype=float16", "--overwrite"])
    for proc in (chief, other):
        assert proc.returncode == 1 and "overflows float16" in proc.stderr, proc.stderr[-3000:]
    assert schema.load_dataset_info(str(output)).provenance == one.provenance
    assert sorted(os.listdir(tmp_path)) == ["cache", "huge.weights.h5"]  # no temporary folder left
