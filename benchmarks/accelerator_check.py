r"""One command for the day a GPU or TPU is at hand: train, evaluate and export on it, and time it.

Run:

    python benchmarks/accelerator_check.py [--tpu=NAME] [--steps=300] [--work_dir=/tmp/nlr_accelerator_check]

On a machine with a GPU (or with --tpu), it writes the built-in benchmark's
multi-label dataset to disk as TFRecords, then trains `noisy` with Inception
V3 at 299 px for --steps steps four times: float32 and mixed precision
(mixed_float16 on GPUs, mixed_bfloat16 on TPUs), each without and with XLA,
under the `mirrored` strategy (all GPUs) or `tpu`. It prints images/s of
each (from the steps after the first, which traces), evaluates the last run
on test with nlr-eval and exports it with nlr-export, and exits non-zero if
any of these fails. On a machine without an accelerator it says so in one
line and exits 0; --force runs it anyway on what there is (with
--backbone=small_cnn --image_size=32 --steps=6 --num_train=300 it checks the
script itself in about a minute on a CPU).
"""

import json
import os
import subprocess
import sys

from absl import app, flags

_TPU = flags.DEFINE_string("tpu", "", "TPU name or address: run on it under the tpu strategy.")
_STEPS = flags.DEFINE_integer("steps", 300, "Training steps per configuration.", lower_bound=2)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 0, "Global batch (0: 64 per accelerator).", lower_bound=0)
_BACKBONE = flags.DEFINE_string("backbone", "inception_v3", "Backbone, as nlr-train.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 299, "Input side, as nlr-train.", lower_bound=8)
_WORK_DIR = flags.DEFINE_string("work_dir", "/tmp/nlr_accelerator_check", "Where the data and the runs go.")
_NUM_TRAIN = flags.DEFINE_integer(
    "num_train", None, "Training images of the dataset written (default: the benchmark's 12,000).", lower_bound=100
)
_FORCE = flags.DEFINE_bool("force", False, "Run without an accelerator too (a check of the script itself).")


def _run(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"nlr_tf.cli.{name}", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"nlr_tf.cli.{name} {' '.join(args)} failed (exit {proc.returncode}):\n{tail}")
    return proc


def main(argv):
    del argv
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not _TPU.value and not _FORCE.value:
        print("accelerator check: no GPU and no --tpu on this machine; nothing to check")
        return 0
    replicas = max(1, len(gpus))
    strategy = ["--strategy=tpu", f"--tpu={_TPU.value}"] if _TPU.value else ["--strategy=mirrored"] if gpus else []
    mixed = "mixed_bfloat16" if _TPU.value else "mixed_float16"
    batch = _BATCH_SIZE.value or 64 * (8 if _TPU.value else replicas)
    batch -= batch % 10 or 0  # a multiple of 10 for the 9:1 batches of the methods that mix
    work = _WORK_DIR.value
    data = os.path.join(work, "data")
    where = f"TPU {_TPU.value}" if _TPU.value else f"{len(gpus)} GPU(s)" if gpus else "no accelerator (--force)"
    print(f"accelerator check on {where}: {_BACKBONE.value} at {_IMAGE_SIZE.value} px, batch {batch}")
    failures = []
    try:
        if not os.path.isfile(os.path.join(data, "dataset.json")):
            sizes = [f"--num_train={_NUM_TRAIN.value}", "--num_val=50", "--num_test=50"] if _NUM_TRAIN.value else []
            _run("make_tfrecords", "--source=digits_mosaic", f"--output_dir={data}", "--quiet", *sizes)
        last = ""
        for precision in ("none", mixed):
            for xla in (False, True):
                model_dir = os.path.join(work, f"noisy_{precision}_{'xla' if xla else 'noxla'}")
                label = f"{'float32' if precision == 'none' else precision:>14}, XLA {'on ' if xla else 'off'}"
                try:
                    _run(
                        "train",
                        "--method=noisy",
                        f"--dataset={data}",
                        f"--model_dir={model_dir}",
                        f"--backbone={_BACKBONE.value}",
                        f"--image_size={_IMAGE_SIZE.value}",
                        f"--batch_size={batch}",
                        f"--train_steps={_STEPS.value}",
                        f"--log_steps={max(1, _STEPS.value // 3)}",
                        f"--checkpoint_steps={_STEPS.value}",
                        f"--mixed_precision={precision}",
                        f"--jit_compile={str(xla).lower()}",
                        *strategy,
                    )
                except RuntimeError as e:
                    failures.append(str(e))
                    print(f"{label}: FAILED")
                    continue
                with open(os.path.join(model_dir, "train_result.json")) as f:
                    result = json.load(f)
                step = result.get("step_seconds")
                rate = f"{batch / step:8.1f} images/s" if step else "no timed step"
                print(f"{label}: {rate}")
                last = model_dir
        if last:
            _run("evaluate", f"--model_dir={last}", f"--dataset={data}", "--num_examples=0")
            print(f"evaluated {last} on test: {os.path.join(last, 'eval_test', 'metrics.json')}")
            export_dir = os.path.join(work, "export", "1")
            _run("export", f"--model_dir={last}", f"--export_dir={export_dir}", "--overwrite", "--thresholds")
            print(f"exported to {export_dir}")
    except RuntimeError as e:
        failures.append(str(e))
    for failure in failures:
        print(failure, file=sys.stderr)
    print("accelerator check: " + ("FAILED" if failures else "every step passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    app.run(main)
