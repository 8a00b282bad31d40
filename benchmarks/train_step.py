r"""Step time of the methods' training steps, and the feature cache's speed-up.

Run:

    python benchmarks/train_step.py

Part 1, same backbone (small_cnn, trained) and the same in-memory batch:
the training step of `noise_regularization` and of `label_cleaning`, run by
the `nlr-train` loop (`trainer._make_loop` over `model.train_step`),
against a plain backbone + one sigmoid layer trained by `model.fit` with
the same number of steps per call (`steps_per_execution`). The rounds
alternate the three and report the median step time of each; the ratios
are method / plain.

Part 2, heads on a frozen backbone (resnet50 at 96 px by default) trained
through `nlr_tf.training.trainer.train` from a digits_mosaic dataset: once
reading the feature cache, once decoding images and running the frozen
backbone. The speed-up is the ratio of training examples/s measured by the
trainer after warm-up.

Last line: `ratio: X.XX`, the worse of the two step-time ratios of part 1
(target <= 1.10). The cache speed-up target is >= 20x.
"""

import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from nlr_tf.models.methods import METHODS, build_model
from nlr_tf.training import trainer
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.optimizers import build_optimizer

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 60, "Batch size (a multiple of 10 for 9:1).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Part 1 input side.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 100, "Part 1 classes.")
_STEPS = flags.DEFINE_integer("steps", 20, "Steps per timed call.")
_ROUNDS = flags.DEFINE_integer("rounds", 7, "Alternating rounds.")
_CACHE_BACKBONE = flags.DEFINE_string("cache_backbone", "resnet50", "Part 2 frozen backbone.")
_CACHE_IMAGE_SIZE = flags.DEFINE_integer("cache_image_size", 96, "Part 2 input side.")
_CACHE_STEPS = flags.DEFINE_integer("cache_steps", 60, "Part 2 training steps per run (timed after the first 20).")


def _batch(num_classes, size, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    n_clean = batch_size // 10
    is_clean = np.r_[np.zeros(batch_size - n_clean), np.ones(n_clean)].astype(np.float32)
    return {
        "image": rng.normal(size=(batch_size, size, size, 3)).astype(np.float32),
        "noisy_labels": (rng.random((batch_size, num_classes)) < 0.05).astype(np.float32),
        "verified_labels": (rng.random((batch_size, num_classes)) < 0.05).astype(np.float32) * is_clean[:, None],
        "verified_mask": np.repeat(is_clean[:, None], num_classes, 1),
        "is_clean": is_clean,
    }


def _method_runner(method, batch, steps):
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    model = build_model(
        METHODS[method], _NUM_CLASSES.value, "small_cnn", image_size=_IMAGE_SIZE.value, train_backbone=True
    )
    parts = {p: build_optimizer("adam", 1e-4, f"{p}_opt") for p in model.part_layers()}
    model.set_part_optimizers(parts)
    loop = trainer._make_loop(strategy, model.train_step, model.loss_names)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    n = tf.constant(steps)
    return lambda: loop(iterator, n)["loss"].numpy()


def _fit_runner(batch, steps):
    keras.utils.set_random_seed(0)
    backbone = build_model(METHODS["noisy"], _NUM_CLASSES.value, "small_cnn", image_size=_IMAGE_SIZE.value).backbone
    inputs = keras.Input(batch["image"].shape[1:])
    outputs = keras.layers.Dense(_NUM_CLASSES.value, activation="sigmoid")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy", steps_per_execution=steps)
    ds = tf.data.Dataset.from_tensors((batch["image"], batch["noisy_labels"])).repeat()
    return lambda: model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)


def _step_times():
    batch = _batch(_NUM_CLASSES.value, _IMAGE_SIZE.value, _BATCH_SIZE.value)
    steps = _STEPS.value
    runners = {
        "plain classifier (model.fit)": _fit_runner(batch, steps),
        "noise_regularization": _method_runner("noise_regularization", batch, steps),
        "label_cleaning": _method_runner("label_cleaning", batch, steps),
    }
    for run in runners.values():  # trace and warm up
        run()
        run()
    times = {name: [] for name in runners}
    for _ in range(_ROUNDS.value):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def _cache_speedup():
    from tfrecords_tools import digits_mosaic
    from tfrecords_tools.writer import write_dataset

    tmp = tempfile.mkdtemp(prefix="nlr_bench_")
    data = os.path.join(tmp, "digits")
    write_dataset(digits_mosaic.convert(num_train=1200, num_val=20, num_test=20), data, progress=False)
    common = dict(
        dataset=data, backbone=_CACHE_BACKBONE.value, image_size=_CACHE_IMAGE_SIZE.value, batch_size=_BATCH_SIZE.value
    )
    trainer.train(TrainConfig(method="noisy", model_dir=os.path.join(tmp, "noisy"), train_steps=1, **common))
    speeds = {}
    for name, cache in (("through the frozen backbone", ""), ("from the feature cache", os.path.join(tmp, "cache"))):
        run = dict(
            method="noise_regularization",
            init_checkpoint=os.path.join(tmp, "noisy"),
            train_backbone=False,
            feature_cache=cache,
            train_steps=_CACHE_STEPS.value,
            log_steps=_CACHE_STEPS.value - 20,
            checkpoint_steps=10**9,
            **common,
        )
        # The first chunk (40 steps) includes tracing and warm-up; the last 20 are timed.
        result = trainer.train(TrainConfig(model_dir=os.path.join(tmp, name.replace(" ", "_")), **run))
        speeds[name] = result["examples_per_second"]
    return speeds


def main(argv):
    del argv
    times = _step_times()
    plain = times["plain classifier (model.fit)"]
    print(
        f"part 1: step time, small_cnn at {_IMAGE_SIZE.value} px, "
        f"batch {_BATCH_SIZE.value}, {_NUM_CLASSES.value} classes"
    )
    for name, t in times.items():
        print(f"  {name:<30} {1000 * t:8.2f} ms/step   ratio to plain {t / plain:5.2f}")
    speeds = _cache_speedup()
    slow, fast = speeds["through the frozen backbone"], speeds["from the feature cache"]
    print(f"part 2: noise_regularization heads on a frozen {_CACHE_BACKBONE.value} at {_CACHE_IMAGE_SIZE.value} px")
    for name, s in speeds.items():
        print(f"  {name:<30} {s:10.1f} examples/s")
    print(f"  feature cache speed-up: {fast / slow:.1f}x")
    worse = max(times["noise_regularization"], times["label_cleaning"]) / plain
    print(f"ratio: {worse:.2f}")


if __name__ == "__main__":
    app.run(main)
