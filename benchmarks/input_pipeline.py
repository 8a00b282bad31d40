r"""Speed of the training input pipeline against a bare decode-only ceiling.

Run:

    python benchmarks/input_pipeline.py --num_records=5000 --image_size=299

Writes (or, with --data_dir pointing at an existing folder, reuses) a
dataset of random smooth JPEGs (noisy and clean splits, 9:1) and times two
pipelines over the same records, alternating them for a few rounds:

- full: `nlr_tf.data.pipeline.make_train_dataset` (read, shuffle, mix 9:1
  exactly, parse every feature, decode, resize, batch, prefetch;
  non-deterministic, AUTOTUNE). The backbone's pixel scaling is the
  model's first layer, so it is not input-pipeline work;
- bare: `TFRecordDataset(files) -> map(parse the image bytes only ->
  decode_jpeg -> resize, AUTOTUNE) -> batch -> prefetch`, the ceiling of
  any pipeline that decodes these images.

Prints images/s of both (best and median over the rounds), the process CPU
time per image of each (less sensitive to other load on the machine) and,
last, `ratio: X.XX`: the median over rounds of full / bare images/s
measured back to back.

The batch size is 60, not 64: 9:1 mixing needs a multiple of 10.
"""

import concurrent.futures
import gc
import io
import os
import resource
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags
from PIL import Image

from nlr_tf.data import pipeline, schema
from nlr_tf.data.input_config import InputConfig
from tfrecords_tools.records import Conversion, Record
from tfrecords_tools.writer import write_dataset

_NUM_RECORDS = flags.DEFINE_integer("num_records", 5000, "Records to write (noisy:clean = 9:1).", lower_bound=100)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 299, "Side of the written images and of the model input.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 100, "Number of classes of the written labels.", lower_bound=1)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 8, "Shards per split.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 60, "Batch size of both pipelines; must be a multiple of 10 to mix 9:1 exactly."
)
_BACKBONE = flags.DEFINE_enum("backbone", "inception_v3", ["inception_v3", "resnet50", "small_cnn"], "Preprocessing.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Alternating measurement rounds.", lower_bound=1)
_IMAGES_PER_ROUND = flags.DEFINE_integer("images_per_round", 1800, "Images timed per pipeline and round.")
_WARMUP_BATCHES = flags.DEFINE_integer("warmup_batches", 10, "Batches drawn before each timed run.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset folder to reuse, or to create if absent.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the written images and labels.")


# === Data ===


def _smooth_jpeg(seed: int, size: int) -> bytes:
    """A random image with structure at several scales, as JPEG (quality 90)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.float32)
    for cells, amplitude in ((4, 90.0), (16, 45.0), (64, 20.0)):
        noise = rng.normal(0.0, amplitude, (cells, cells, 3)).astype(np.float32)
        for c in range(3):
            layer = Image.fromarray(noise[..., c], mode="F").resize((size, size), Image.BICUBIC)
            image[..., c] += np.asarray(layer)
    pixels = np.clip(image + 128.0, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _records(num_records: int, size: int, num_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        images = pool.map(_smooth_jpeg, range(seed * num_records, (seed + 1) * num_records), [size] * num_records)
        for i, encoded in enumerate(images):
            split = "clean" if i % 10 == 9 else "noisy"
            true = rng.choice(num_classes, size=rng.integers(1, 4), replace=False).tolist()
            noisy = rng.choice(num_classes, size=rng.integers(0, 4), replace=False).tolist()
            checked = rng.choice(num_classes, size=min(num_classes, 10), replace=False).tolist()
            yield Record(
                split=split,
                id=f"{split}-{i:07d}",
                noisy=noisy,
                verified_pos=[c for c in checked if c in true] if split == "clean" else [],
                verified_neg=[c for c in checked if c not in true] if split == "clean" else [],
                image_bytes=encoded,
                origin=f"benchmark:{i}",
            )


def _dataset(path: str) -> schema.DatasetInfo:
    if os.path.isfile(os.path.join(path, schema.DATASET_JSON)):
        print(f"reusing {path}")
        return schema.load_dataset_info(path)
    n = _NUM_RECORDS.value
    print(f"writing {n} JPEG records of {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value} to {path}")
    classes = [schema.ClassInfo(id=f"c{i}", name=f"class_{i}") for i in range(_NUM_CLASSES.value)]
    conversion = Conversion(
        classes=classes,
        multi_label=True,
        items=_records(n, _IMAGE_SIZE.value, _NUM_CLASSES.value, _SEED.value),
        source="benchmark",
        total=n,
    )
    return write_dataset(conversion, path, num_shards=_NUM_SHARDS.value, progress=False)


# === Pipelines ===


def _bare_dataset(files: list[str], image_size: int, batch_size: int) -> tf.data.Dataset:
    spec = {schema.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string)}

    def decode(serialized: tf.Tensor) -> tf.Tensor:
        encoded = tf.io.parse_single_example(serialized, spec)[schema.IMAGE_ENCODED]
        image = tf.io.decode_jpeg(encoded, channels=3)
        return tf.image.resize(image, (image_size, image_size))

    ds = tf.data.TFRecordDataset(files).repeat()  # repeat: never run out while timing
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _time_batches(iterator, batches: int, batch_size: int) -> tuple[float, float]:
    """Draws `batches` batches; returns (images/s, CPU milliseconds per image)."""
    cpu, start = _cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    # Make sure the last batch is materialized before stopping the clock.
    (batch["image"] if isinstance(batch, dict) else batch).numpy()
    images = batches * batch_size
    return images / (time.perf_counter() - start), 1000 * (_cpu_seconds() - cpu) / images


def _measure(info: schema.DatasetInfo) -> None:
    files = info.split_files("noisy") + info.split_files("clean")
    size, batch_size = _IMAGE_SIZE.value, _BATCH_SIZE.value
    input_config = InputConfig(backbone=_BACKBONE.value, image_size=size, deterministic=False)
    full = pipeline.make_train_dataset(info, batch_size, "9:1", input_config=input_config)
    bare = _bare_dataset(files, size, batch_size)
    datasets = {"full": full, "bare": bare}
    batches = max(1, _IMAGES_PER_ROUND.value // batch_size)
    rates = {"full": [], "bare": []}
    cpu_ms = {"full": [], "bare": []}
    for r in range(_ROUNDS.value):
        # Alternate which pipeline goes first.
        order = ("bare", "full") if r % 2 == 0 else ("full", "bare")
        for name in order:
            # A fresh iterator per measurement, warmed up, then timed and
            # closed: an idle pipeline's background threads would otherwise
            # refill its buffers while the other one is timed.
            iterator = iter(datasets[name])
            _time_batches(iterator, _WARMUP_BATCHES.value, batch_size)
            rate, ms = _time_batches(iterator, batches, batch_size)
            del iterator
            gc.collect()
            rates[name].append(rate)
            cpu_ms[name].append(ms)
        print(
            f"round {r + 1}: bare {rates['bare'][-1]:7.1f} images/s ({cpu_ms['bare'][-1]:.3f} CPU ms/image)   "
            f"full {rates['full'][-1]:7.1f} images/s ({cpu_ms['full'][-1]:.3f} CPU ms/image)"
        )
    for name in ("bare", "full"):
        print(
            f"{name}: best {max(rates[name]):.1f} images/s, median {statistics.median(rates[name]):.1f} images/s, "
            f"median {statistics.median(cpu_ms[name]):.3f} CPU ms/image"
        )
    print(f"best full / best bare: {max(rates['full']) / max(rates['bare']):.2f}")
    cpu_ratio = statistics.median(cpu_ms["bare"]) / statistics.median(cpu_ms["full"])
    print(f"CPU time per image, bare / full (medians): {cpu_ratio:.2f}")
    # The headline: full / bare of back-to-back measurements, median over rounds.
    ratios = [f / b for f, b in zip(rates["full"], rates["bare"])]
    print(f"ratio: {statistics.median(ratios):.2f}")


def main(argv):
    del argv
    if _DATA_DIR.value:
        _measure(_dataset(_DATA_DIR.value))
        return
    with tempfile.TemporaryDirectory(prefix="nlr_input_benchmark_") as tmp:
        _measure(_dataset(os.path.join(tmp, "data")))


if __name__ == "__main__":
    app.run(main)
