r"""End to end: the `nlr-train` loop against `model.fit`, from TFRecords on disk.

Run:

    python benchmarks/end_to_end.py

Writes a digits_mosaic dataset (multi-label, 32x32 PNG mosaics, 10
classes; `--num_train` training images) as TFRecords (or reuses
`--data_dir`), then, for each backbone of `--models` (small_cnn and
resnet50 by default, both at 32 px, resnet50's smallest size), trains the
whole network (backbone included) on the noisy labels two ways:

- ours: `nlr_tf.training.trainer.train(TrainConfig(method="noisy",
  train_backbone=True, ...))`, the whole `nlr-train` loop: TFRecords ->
  `pipeline.distribute_train_dataset` -> `tf.function` loops of
  `log_steps` steps of `model.train_step` (masked BCE, one Adam per part)
  -> per-interval float syncs, TensorBoard scalars, a log line, and
  checkpoints every `--checkpoint_steps` (500, the trainer's default; the
  repository's flag files use 4,000-50,000). A run is shorter than that,
  so its one save, at its last step, falls after the timed window; a save
  measured here takes ~0.2 s (small_cnn) and ~1.5 s (resnet50), < 0.5% of
  500 steps of either.
- fit: the same architecture as a plain Keras model, `build_backbone(...)`
  + `keras.layers.Dense(num_classes)` logits, compiled with
  `BinaryCrossentropy(from_logits=True)`, Adam at the trainer's learning
  rate (1e-3) and `steps_per_execution` = `log_steps`, trained by
  `model.fit` on the same input pipeline: `pipeline.make_train_dataset`
  with the trainer's arguments (mix 1:0, the `noisy` method's), mapped to
  (image, noisy_labels). Same batch, image size and dtype (float32).

small_cnn uses the trainer's default `log_steps` (50); resnet50 uses 10:
one of its steps takes 1-2 s on two CPU cores, and at that step time any
per-call overhead is far below 0.1% either way.

The two take turns in one process, one interval of `log_steps` steps at a
time: `model.fit` runs in a second thread whose callback waits at each
`on_train_batch_begin`; each time the trainer writes its "step N/M" log
line (after its scalars), the benchmark lets fit run one
`steps_per_execution` call and waits until it is back at the next
`on_train_batch_begin`. So ours' interval is from the end of fit's turn to
its next log line (its loop call, syncs, scalars, logging, checkpoint
checks), and fit's is its whole turn (the call, its callbacks and its
data iterator's bookkeeping). Both input pipelines run all along; as
decoding outpaces training, the waiting side's buffers are already full
and it takes no CPU. The turns are seconds apart, so machine load hits
both alike: runs of each a minute apart (the first design) gave paired
ratios anywhere from 0.65 to 1.83 on this shared machine.

The first `--warmup_intervals` intervals of each (model building,
tracing / XLA compilation, the first fill of the pipeline) are left out;
examples/s is batch x steps / seconds over the next `--timed_intervals`
intervals. Each round trains a fresh model each way, with XLA off
(`--rounds`) and on (`--xla_rounds`; the trainer's `--jit_compile`, and
`compile(jit_compile=True)`). The table gives, per model and XLA setting,
the medians over rounds of ours' and fit's examples/s and of their ratio
(ours / fit of the same round), the ratio of the time inside the step
loop alone (the trainer's `examples_per_second` scalars; fit's time from
`on_train_batch_begin` to `on_train_batch_end`), and of CPU time per
example (fit / ours); then XLA on / off.

Takes ~18 min by default on two shared CPU cores, ~15 of them resnet50's:
a step takes ~1 s, tracing its training step 35-70 s per model and
compiling it with XLA 75-100 s, twice per round (`--models=small_cnn`:
~3 min; `--xla_rounds=0` leaves out ~5 min).

Last line: `ratio: X.XX`, the lower of the two models' ratios, ours / fit,
XLA off (target >= 0.95).
"""

import gc
import os
import queue
import shutil
import statistics
import tempfile
import threading
import time

import keras
import tensorflow as tf
from absl import app, flags, logging
from tensorflow.core.util import event_pb2

from nlr_tf.backbones.networks import build_backbone
from nlr_tf.data import pipeline, schema
from nlr_tf.data.input_config import InputConfig
from nlr_tf.training import trainer
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.optimizers import build_optimizer

_MODELS = flags.DEFINE_list("models", ["small_cnn", "resnet50"], "Backbones to compare.")
_IMAGE_SIZES = flags.DEFINE_list("image_sizes", ["32", "32"], "Input side, one per model.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["32", "8"], "Batch size, one per model.")
_LOG_STEPS = flags.DEFINE_list(
    "log_steps", ["50", "10"], "Steps per loop call (trainer's --log_steps, fit's steps_per_execution), one per model."
)
_WARMUP_INTERVALS = flags.DEFINE_integer(
    "warmup_intervals", 1, "Intervals left out at the start of a run.", lower_bound=1
)
_TIMED_INTERVALS = flags.DEFINE_integer("timed_intervals", 3, "Intervals timed per run.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds with XLA off.", lower_bound=1)
_XLA_ROUNDS = flags.DEFINE_integer("xla_rounds", 1, "Rounds with XLA on (0: skip).", lower_bound=0)
_CHECKPOINT_STEPS = flags.DEFINE_integer("checkpoint_steps", 500, "Trainer's --checkpoint_steps.", lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate, both sides.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1500, "digits_mosaic training images (the noisy split).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset folder to reuse, or to create if absent.")

_METHOD = "noisy"
_MIX_RATIO = "1:0"  # the noisy method's: every example from the noisy split


# === Data ===


def _dataset(path: str) -> schema.DatasetInfo:
    if os.path.isfile(os.path.join(path, schema.DATASET_JSON)):
        print(f"reusing {path}")
        return schema.load_dataset_info(path)
    from tfrecords_tools import digits_mosaic
    from tfrecords_tools.writer import write_dataset

    print(f"writing digits_mosaic (multi_label, {_NUM_TRAIN.value} training images) to {path}")
    return write_dataset(
        digits_mosaic.convert(num_train=_NUM_TRAIN.value, num_val=20, num_test=20), path, progress=False
    )


# === fit, one call at a time ===


def _fit_model(num_classes, backbone, size, log_steps, jit_compile) -> keras.Model:
    features = build_backbone(backbone, "none", size, trainable=True)
    images = keras.Input((size, size, 3), name="image")
    logits = keras.layers.Dense(num_classes, name="classifier")(features(images))
    model = keras.Model(images, logits)
    model.compile(
        optimizer=build_optimizer("adam", _LEARNING_RATE.value, "adam"),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        steps_per_execution=log_steps,
        jit_compile=jit_compile,
    )
    if model.jit_compile != jit_compile:
        raise RuntimeError(f"Keras set jit_compile={model.jit_compile}, asked {jit_compile}")
    return model


class _FitTurns(keras.callbacks.Callback):
    """`model.fit` in a thread that runs one `steps_per_execution` call per `turn()`."""

    def __init__(self, model, dataset, steps):
        super().__init__()
        self._go, self._back = queue.Queue(), queue.Queue()
        self._begin = 0.0
        self.inside: list[float] = []  # wall s from on_train_batch_begin to on_train_batch_end
        self._thread = threading.Thread(target=self._fit, args=(model, dataset, steps), daemon=True)
        self._thread.start()
        self._wait()  # fit has made its iterator and waits before its first call

    def _fit(self, model, dataset, steps):
        try:
            model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[self])
            self._back.put("end")
        except BaseException as e:  # handed to the caller's thread
            self._back.put(e)

    def on_train_batch_begin(self, batch, logs=None):
        self._back.put("ready")
        self._go.get()
        self._begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # Keras has already turned `logs` into floats: the call has finished.
        self.inside.append(time.perf_counter() - self._begin)

    def _wait(self) -> str:
        message = self._back.get()
        if isinstance(message, BaseException):
            raise message
        return message

    def turn(self) -> tuple[float, float, str]:
        """Lets fit run one call; returns (wall s, process CPU s) until it is back, and "ready" or "end"."""
        wall, cpu = time.perf_counter(), time.process_time()
        self._go.put(None)
        message = self._wait()
        return time.perf_counter() - wall, time.process_time() - cpu, message

    def finish(self) -> None:
        while self.turn()[2] != "end":
            pass
        self._thread.join()


class _Turns(logging.logging.Handler):
    """At each of the trainer's "step N/M" log lines: closes ours' interval, then gives fit its turn."""

    def __init__(self, fit: _FitTurns):
        super().__init__(level=logging.INFO)
        self.fit = fit
        self.ours: list[tuple[int, float, float]] = []  # (steps done, wall s, CPU s) of each interval
        self.fits: list[tuple[float, float]] = []
        self._resume = (time.perf_counter(), time.process_time())

    def handle(self, record):
        # No handler lock: fit's thread may log while the trainer's waits here.
        if self.filter(record):
            self.emit(record)

    def emit(self, record):
        if not (isinstance(record.msg, str) and record.msg.startswith("step %d/%d")):
            return
        wall, cpu = time.perf_counter(), time.process_time()
        self.ours.append((int(record.args[0]), wall - self._resume[0], cpu - self._resume[1]))
        fit_wall, fit_cpu, message = self.fit.turn()
        if message != "ready":
            raise RuntimeError("fit ended before the trainer")
        self.fits.append((fit_wall, fit_cpu))
        self._resume = (time.perf_counter(), time.process_time())


def _trainer_loop_seconds(model_dir: str, examples_per_call: int) -> dict[int, float]:
    """Seconds inside each loop call (and its float syncs), from the trainer's `examples_per_second` scalars."""
    seconds = {}
    files = tf.io.gfile.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))
    for raw in tf.data.TFRecordDataset(files):
        event = event_pb2.Event.FromString(raw.numpy())
        for value in event.summary.value:
            if value.tag == "examples_per_second":
                seconds[event.step] = examples_per_call / float(tf.make_ndarray(value.tensor))
    return seconds


# === One round: ours and fit in turns ===


def _round(info, backbone, size, batch_size, log_steps, jit_compile, workdir) -> dict[str, dict[str, float]]:
    warmup, timed = _WARMUP_INTERVALS.value, _TIMED_INTERVALS.value
    steps = log_steps * (warmup + timed)
    model = _fit_model(info.num_classes, backbone, size, log_steps, jit_compile)
    # The trainer's input stream (trainer.train -> pipeline.distribute_train_dataset, one input pipeline).
    ds = pipeline.make_train_dataset(
        info,
        batch_size,
        _MIX_RATIO,
        input_config=InputConfig(
            backbone=backbone, image_size=size, seed=0, deterministic=False, augment=False, random_flip=False
        ),
        with_ids=False,
    )
    ds = ds.map(lambda batch: (batch["image"], batch["noisy_labels"]))
    # One call more than the trainer's: fit's last timed turn ends at its next on_train_batch_begin, like the others.
    fit = _FitTurns(model, ds, steps + log_steps)
    turns = _Turns(fit)
    model_dir = tempfile.mkdtemp(prefix=f"ours_{backbone}_", dir=workdir)
    logger = logging.get_absl_logger()
    logger.addHandler(turns)
    try:
        trainer.train(
            TrainConfig(
                method=_METHOD,
                dataset=info.path,
                model_dir=model_dir,
                backbone=backbone,
                image_size=size,
                train_backbone=True,
                optimizer="adam",
                learning_rate=_LEARNING_RATE.value,
                batch_size=batch_size,
                train_steps=steps,
                log_steps=log_steps,
                checkpoint_steps=_CHECKPOINT_STEPS.value,
                jit_compile=jit_compile,
            )
        )
    finally:
        logger.removeHandler(turns)
    fit.finish()
    loop_seconds = _trainer_loop_seconds(model_dir, batch_size * log_steps)
    shutil.rmtree(model_dir, ignore_errors=True)
    if [s for s, _, _ in turns.ours] != [log_steps * (i + 1) for i in range(warmup + timed)]:
        raise RuntimeError(f"the trainer logged at steps {[s for s, _, _ in turns.ours]}")
    examples = batch_size * log_steps * timed
    window = slice(warmup, warmup + timed)
    ours, fits = turns.ours[window], turns.fits[window]
    ours_loop = sum(loop_seconds[s] for s, _, _ in ours)
    return {
        "ours": {
            "ex_s": examples / sum(w for _, w, _ in ours),
            "loop_ex_s": examples / ours_loop,
            "cpu_ms": 1000 * sum(c for _, _, c in ours) / examples,
            "intervals": [batch_size * log_steps / w for _, w, _ in turns.ours[warmup:]],
            "warmup_s": sum(w for _, w, _ in turns.ours[:warmup]),
        },
        "fit": {
            "ex_s": examples / sum(w for w, _ in fits),
            "loop_ex_s": examples / sum(fit.inside[window]),
            "cpu_ms": 1000 * sum(c for _, c in fits) / examples,
            "intervals": [batch_size * log_steps / w for w, _ in turns.fits[warmup:]],
            "warmup_s": sum(w for w, _ in turns.fits[:warmup]),
        },
    }


# === Main ===


def _measure(info, workdir):
    specs = list(zip(_MODELS.value, _IMAGE_SIZES.value, _BATCH_SIZES.value, _LOG_STEPS.value, strict=True))
    settings = [(False, _ROUNDS.value), (True, _XLA_ROUNDS.value)]
    results = {}  # (backbone, xla) -> {"ours": [runs], "fit": [runs], "spec": (size, batch, log_steps)}
    start = time.perf_counter()
    for backbone, size, batch_size, log_steps in specs:
        size, batch_size, log_steps = int(size), int(batch_size), int(log_steps)
        for r in range(max(n for _, n in settings)):
            for xla, rounds in settings:
                if r >= rounds:
                    continue
                row = results.setdefault(
                    (backbone, xla), {"ours": [], "fit": [], "spec": (size, batch_size, log_steps)}
                )
                keras.backend.clear_session()
                gc.collect()
                measured = _round(info, backbone, size, batch_size, log_steps, xla, workdir)
                for side, m in measured.items():
                    row[side].append(m)
                    print(
                        f"  {backbone} XLA {'on ' if xla else 'off'} round {r + 1} {side:<4}  {m['ex_s']:7.1f} ex/s  "
                        f"(in the loop {m['loop_ex_s']:7.1f}; {m['cpu_ms']:6.2f} CPU ms/ex; "
                        f"intervals {' '.join(f'{x:.1f}' for x in m['intervals'])} ex/s; "
                        f"{m['warmup_s']:.0f} s of warm-up)",
                        flush=True,
                    )
                print(f"  [{(time.perf_counter() - start) / 60:.1f} min]", flush=True)
    return results


def _median(runs, key):
    return statistics.median(run[key] for run in runs)


def _table(results) -> dict[str, float]:
    """Prints the medians; returns each model's XLA-off ratio."""
    print()
    print(
        f"{'model':<10} {'px':>3} {'batch':>5} {'steps/call':>10} {'XLA':>4} {'ours ex/s':>10} {'fit ex/s':>9} "
        f"{'ratio':>6}   {'in-loop ratio':>13} {'CPU/ex fit/ours':>15}   ratio per round"
    )
    ratios = {}
    for (backbone, xla), row in results.items():
        size, batch_size, log_steps = row["spec"]
        pairs = list(zip(row["ours"], row["fit"]))
        ratio = statistics.median(o["ex_s"] / f["ex_s"] for o, f in pairs)
        loop_ratio = statistics.median(o["loop_ex_s"] / f["loop_ex_s"] for o, f in pairs)
        cpu_ratio = statistics.median(f["cpu_ms"] / o["cpu_ms"] for o, f in pairs)
        if not xla:
            ratios[backbone] = ratio
        per_round = " ".join(f"{o['ex_s'] / f['ex_s']:.2f}" for o, f in pairs)
        print(
            f"{backbone:<10} {size:>3} {batch_size:>5} {log_steps:>10} {'on' if xla else 'off':>4} "
            f"{_median(row['ours'], 'ex_s'):10.1f} {_median(row['fit'], 'ex_s'):9.1f} {ratio:6.2f}   "
            f"{loop_ratio:13.2f} {cpu_ratio:15.2f}   {per_round}"
        )
    for backbone in ratios:
        if (backbone, True) in results:
            off, on = results[(backbone, False)], results[(backbone, True)]
            gain = {side: _median(on[side], "ex_s") / _median(off[side], "ex_s") for side in ("ours", "fit")}
            print(f"XLA on / off examples/s, {backbone}: ours {gain['ours']:.2f}, fit {gain['fit']:.2f}")
    return ratios


def main(argv):
    del argv
    start = time.perf_counter()
    logging.set_verbosity(logging.INFO)  # the trainer's per-interval log line paces the turns
    workdir = tempfile.mkdtemp(prefix="nlr_e2e_")
    try:
        info = _dataset(_DATA_DIR.value or os.path.join(workdir, "digits"))
        print(
            f"whole network, method noisy, Adam {_LEARNING_RATE.value:g}, checkpoints every {_CHECKPOINT_STEPS.value} "
            f"steps; ours and fit take turns, {_TIMED_INTERVALS.value} timed interval(s) each after "
            f"{_WARMUP_INTERVALS.value} warm-up interval(s)"
        )
        results = _measure(info, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratios = _table(results)
    print(f"total time {(time.perf_counter() - start) / 60:.1f} min")
    print(f"ratio: {min(ratios.values()):.2f}")


if __name__ == "__main__":
    app.run(main)
