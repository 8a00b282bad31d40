"""Shared test set-up: two logical CPU devices and toy datasets.

The logical devices must be configured before TensorFlow runs any op, so
this happens at import time, before any test module is collected.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels (max-pool and conv gradients) give results that
# depend on the batch size at the 1 % level, which would hide what the
# distribution tests compare (one device on a global batch against two
# replicas on halves of it); TensorFlow's own kernels agree to float
# precision.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from nlr_tf.data.schema import ClassInfo  # noqa: E402
from tfrecords_tools.records import Conversion, Record  # noqa: E402
from tfrecords_tools.writer import write_dataset  # noqa: E402


def toy_records(split_sizes, num_classes=5, image_size=(12, 10), seed=0, with_true=False, verify_share=1.0):
    """Deterministic records with random RGB images and random labels.

    Records of splits other than `noisy` get verified labels on a share
    `verify_share` of the classes (the rest stay unverified).
    """
    rng = np.random.default_rng(seed)
    records = []
    for split, n in split_sizes.items():
        for i in range(n):
            true = sorted(rng.choice(num_classes, size=rng.integers(1, 3), replace=False).tolist())
            noisy = sorted(rng.choice(num_classes, size=rng.integers(0, 3), replace=False).tolist())
            vpos, vneg = [], []
            if split != "noisy":
                checked = [c for c in range(num_classes) if rng.random() < verify_share]
                vpos = [c for c in checked if c in true]
                vneg = [c for c in checked if c not in true]
            image = rng.integers(0, 256, size=(*image_size, 3), dtype=np.uint8)
            records.append(
                Record(
                    split=split,
                    id=f"{split}-{i:05d}",
                    noisy=noisy,
                    verified_pos=vpos,
                    verified_neg=vneg,
                    true=true if with_true else None,
                    image_array=image,
                    origin=f"toy:{split}:{i}",
                )
            )
    return records


def write_toy_dataset(path, split_sizes, num_classes=5, num_shards=3, multi_label=True, **kwargs):
    """Writes a toy dataset folder and returns (DatasetInfo, records)."""
    records = toy_records(split_sizes, num_classes=num_classes, **kwargs)
    classes = [
        ClassInfo(id=f"c{i}", name=f"class_{i}", category="even" if i % 2 == 0 else "odd") for i in range(num_classes)
    ]
    conversion = Conversion(classes=classes, multi_label=multi_label, items=records, source="toy", total=len(records))
    info = write_dataset(conversion, str(path), num_shards=num_shards, progress=False)
    return info, records


@pytest.fixture(scope="module")
def run_dataset(tmp_path_factory):
    """The resume and fault tests' dataset (one per module): noisy 120, clean 30, val 20 records in 4 shards."""
    path = tmp_path_factory.mktemp("data") / "toy"
    write_toy_dataset(path, {"noisy": 120, "clean": 30, "val": 20}, num_shards=4)
    return str(path)


@pytest.fixture
def toy_dataset(tmp_path):
    """A small multi-label dataset: noisy 90, clean 20, val 12, test 12 records."""
    return write_toy_dataset(tmp_path / "toy", {"noisy": 90, "clean": 20, "val": 12, "test": 12})
