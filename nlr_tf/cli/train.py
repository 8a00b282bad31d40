r"""nlr-train: trains a method or baseline on a dataset folder.

Examples:
  nlr-train --flagfile=flags/digits_ml_noisy.cfg --dataset=out/digits_mosaic_ml --model_dir=runs/noisy
  nlr-train --flagfile=flags/digits_ml_nr_sigmoid.cfg --dataset=out/digits_mosaic_ml \
      --init_checkpoint=runs/noisy --model_dir=runs/nr_sigmoid --activation=sigmoid

Started again with the same command, a run resumes from the last checkpoint
in --model_dir that reads in full (a damaged one is skipped with a warning)
and ends at the same step count. One job at a time trains in a --model_dir:
it holds MODEL_DIR/job.lock, and a second job there is refused with one line
naming the first. TensorBoard logs go under --model_dir/train. With
--train_backbone=false and --feature_cache=DIR, the heads train on cached
backbone features (written once, by this binary or by nlr-extract-features).

A SIGTERM (a preemption notice) stops a run at the end of the steps it is
running (every worker of a multi-worker job at the boundary they agree on):
it checkpoints that step, prints one line and exits with status 75
(`preemption.PREEMPTED_STATUS`); the same command resumes. A worker of a
multi-worker job that is gone (killed, its machine lost) stops the others
with one line; starting every worker again resumes from the last checkpoint.
"""

import contextlib
import dataclasses
import sys
import typing

from absl import app, flags

from nlr_tf.training.config import TrainConfig, flag_fields


def _define_flag(field: dataclasses.Field) -> None:
    """The flag of one `TrainConfig` field: its type, default, choices, bounds and help text."""
    spec = field.metadata["flag"]
    default = None if field.default is dataclasses.MISSING else field.default
    kind = typing.get_args(field.type)[0] if typing.get_origin(field.type) is typing.Union else field.type
    if spec["choices"] is not None:
        flags.DEFINE_enum(field.name, default, list(spec["choices"]), spec["help"])
    elif kind is bool:
        flags.DEFINE_bool(field.name, default, spec["help"])
    elif kind is int:
        flags.DEFINE_integer(field.name, default, spec["help"], lower_bound=spec["lower"], upper_bound=spec["upper"])
    elif kind is float:
        flags.DEFINE_float(field.name, default, spec["help"], lower_bound=spec["lower"], upper_bound=spec["upper"])
    elif typing.get_origin(kind) is tuple:
        flags.DEFINE_list(field.name, list(default), spec["help"])
    else:
        flags.DEFINE_string(field.name, default, spec["help"])


for _field in flag_fields():
    _define_flag(_field)
flags.mark_flags_as_required([f.name for f in flag_fields() if f.default is dataclasses.MISSING])


def config_from_flags() -> TrainConfig:
    """The `TrainConfig` the parsed flags describe."""
    values = {f.name: flags.FLAGS[f.name].value for f in flag_fields()}
    values["devices"] = tuple(values["devices"])
    return TrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from nlr_tf.training.run_lock import chief_task, run_locked

    config = config_from_flags()
    if config.strategy == "multi_worker_mirrored" and not chief_task():
        return _train(config)  # the chief holds the job's lock; its workers share the run folder
    return run_locked(config.model_dir, "nlr-train", _train, config)


def _train(config: TrainConfig) -> int:
    from nlr_tf.training import preemption
    from nlr_tf.training.checks import ConfigError
    from nlr_tf.training.model_dir import CheckpointError
    from nlr_tf.training.trainer import TrainingDiverged, WorkerLost, train

    # One process (one device, `mirrored`, a TPU's host) hears its own notice; the trainer hands the workers of a
    # multi-worker job to TensorFlow's PreemptionCheckpointHandler, which makes them agree on the step.
    single = config.strategy != "multi_worker_mirrored"
    try:
        with preemption.notice() if single else contextlib.nullcontext() as notice:
            result = train(config, preemption_notice=notice)
    except (ConfigError, CheckpointError, TrainingDiverged, WorkerLost) as e:
        print(f"nlr-train: error: {e}", file=sys.stderr)
        return 1
    except preemption.Preempted as e:
        print(preemption.message("nlr-train", e), flush=True)
        return preemption.PREEMPTED_STATUS
    losses = " ".join(f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float) and k != "weights_checksum")
    print(f"trained {result['method']} for {result['step']} steps: {losses}")
    print(f"weights checksum: {result['weights_checksum']:.10g}")
    return 0


def run(argv=None):
    """Runs nlr-train on `argv` (None: `sys.argv`); a full disk ends it in one line (`faults.run`)."""
    from nlr_tf.cli import faults

    faults.run("nlr-train", main, argv)


if __name__ == "__main__":
    run()
