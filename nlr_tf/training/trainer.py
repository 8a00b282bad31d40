"""The training loop: input -> model -> update step -> checkpoint -> logs.

One function, `train(config)`, runs every method. It checks the
configuration against the dataset before building anything, builds the
model under the strategy's scope (starting from a `noisy` model's checkpoint
when the method says so), restores the last checkpoint of `model_dir` if
there is one (the last that reads in full: a damaged one is skipped with a
warning; so an interrupted run started again with the same command
resumes, its input streams taken up after the batches already trained on,
and ends at the same step count; under `--deterministic`, with the weights
and evaluations of the run never interrupted), and then runs steps in
`tf.function` loops of up to `log_steps`, writing TensorBoard scalars and
checkpoints as it goes. The final model is saved as `model.keras`. Given a
`preemption.Notice`, a SIGTERM stops the run at the end of the `tf.function`
loop it is in: the step reached is checkpointed, and `Preempted` raised.
"""

import contextlib
import math
import os
import re
import time
from typing import Any, Iterator, NoReturn, Optional

import keras
import tensorflow as tf
from absl import logging

from nlr_tf.data import files, pipeline
from nlr_tf.data.input_config import InputConfig
from nlr_tf.training import checkpoints, early_stopping, preemption
from nlr_tf.training import model_dir as run_files
from nlr_tf.training import optimizers as optim
from nlr_tf.training.checks import ConfigError, check_config, mix_ratio, train_backbone
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.model_dir import CheckpointError
from nlr_tf.training.setup import (
    build_model_and_checkpoint,
    make_strategy,
    open_feature_cache,
    restore_init_checkpoint,
    write_run_config,
)
from nlr_tf.training.strategies import is_chief
from nlr_tf.training.tasks import get_task, main_phase_start, phase_schedule


class TrainingDiverged(RuntimeError):
    """The loss became non-finite: the run stopped, keeping only the checkpoints written before."""


class WorkerLost(RuntimeError):
    """A worker of a multi-worker job stopped: the others stop too, keeping the checkpoints written before."""


# How a collective op on the workers left says a peer's connection closed (gRPC's words).
_CLOSED = ("connection reset", "socket closed", "connection refused", "failed to connect")


@contextlib.contextmanager
def _peers_watched(strategy, multi_worker: bool, saved_step: Optional[int]) -> Iterator[None]:
    """Turns a collective op's failure on a lost peer into `WorkerLost`, one line naming the worker."""
    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as e:
        if not multi_worker:
            raise
        own = strategy.cluster_resolver.task_id
        others = [int(t) for t in re.findall(r"/job:\w+/(?:replica:\d+/)?task:(\d+)", e.message) if int(t) != own]
        who = f"worker {others[0]}" if others else "another worker"
        text = e.message.lower()
        if "heartbeat" in text:
            cause = "it stopped sending heartbeats"
        elif any(words in text for words in _CLOSED):
            cause = "its connection closed"
        else:
            cause = e.message.strip().splitlines()[0][:200]
        resume = (
            f"its last checkpoint (step {saved_step})" if saved_step is not None else "the start (no checkpoint yet)"
        )
        raise WorkerLost(
            f"{who} of the multi-worker job is gone ({cause}): this worker stopped too; start every worker again "
            f"with the same command to resume from {resume}"
        ) from None


def _barrier(strategy) -> None:
    """Returns once every worker has reached it (an all-reduce of one number)."""
    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


# === The step loop ===
def _make_loop(strategy, step_fn, loss_names, jit_compile=False):
    if jit_compile:
        # XLA compiles each replica's step; the loop around it reads the input iterator, which XLA cannot.
        step_fn = tf.function(step_fn, jit_compile=True, reduce_retracing=True)

    @tf.function
    def loop(iterator, num_steps):
        totals = {name: tf.constant(0.0) for name in loss_names}
        for _ in tf.range(num_steps):
            logs = strategy.run(step_fn, args=(next(iterator),))
            # Each replica's loss is its share of the global mean: sum them.
            totals = {
                name: totals[name] + strategy.reduce(tf.distribute.ReduceOp.SUM, logs[name], axis=None)
                for name in loss_names
            }
        return {name: value / tf.cast(num_steps, tf.float32) for name, value in totals.items()}

    return loop


def _batches(strategy, data, input_config: InputConfig, config: TrainConfig, model, ratio: str, skip_steps: int):
    """The run's distributed training batches at a batch mix, taken up after the first `skip_steps` steps' batches."""
    return iter(
        pipeline.distribute_train_dataset(
            strategy,
            data,
            config.batch_size,
            ratio,
            skip_steps=skip_steps,
            input_config=input_config,
            noisy_split=config.noisy_split,
            clean_split=config.clean_split,
            with_ids=model.needs_ids,
        )
    )


def _check_finite(logs: dict[str, float], current: int, num_steps: int, manager) -> None:
    """Stops the run (`TrainingDiverged`) if a loss of the steps just run is not finite."""
    if not all(math.isfinite(v) for v in logs.values()):
        # Nothing more is saved: the checkpoints written so far hold the weights before the divergence.
        last = manager.latest_checkpoint
        raise TrainingDiverged(
            f"the loss became non-finite between steps {current} and {current + num_steps} "
            f"({', '.join(f'{k}={v:.4g}' for k, v in logs.items())}); "
            + (f"the last checkpoint before it is {last}" if last else "no checkpoint was written before it")
            + ": lower the learning rate (--learning_rate) and train again in a new --model_dir"
        )


def _check_best_weights(evaluations: early_stopping.Evaluations, step: int, restored: str, kept: list[int]) -> None:
    """Makes sure `best/` holds the weights of the best evaluation the restored checkpoint's history knows.

    They are kept for every checkpoint on disk, so they are there unless
    files were deleted by hand or the run folder was written by an older
    version that kept only the newest checkpoint's. The restored checkpoint
    holds them if that best evaluation is of its own step; otherwise they
    are lost.

    Raises:
        CheckpointError: the best weights are lost (the run could not keep its --restore_best promise).
    """
    best = evaluations.best()
    if not evaluations.best_dir or best is None:
        return
    prefix = evaluations.best_prefix(best["step"])
    if tf.io.gfile.exists(prefix + ".index"):
        return
    if best["step"] != step:
        raise CheckpointError(
            f"{evaluations.best_dir} lacks the weights of the evaluation of step {best['step']}, the best that "
            f"{os.path.basename(restored)} knows: start the run in a new --model_dir"
        )
    logging.info("writing the best evaluation's weights (step %d) again from %s", step, restored)
    evaluations.best_checkpoint.write(prefix)
    evaluations.commit(kept)  # best/checkpoint names them


def _write_logs(writer, model, config: TrainConfig, current: int, logs: dict[str, float]) -> None:
    """The losses, examples per second and learning rates at step `current`: TensorBoard scalars and a log line."""
    with writer.as_default(step=current):
        for name, value in logs.items():
            tf.summary.scalar(name if name == "examples_per_second" else f"losses/{name}", value)
        for part, opt in model.part_optimizers.items():
            tf.summary.scalar(f"learning_rate/{part}", optim.current_learning_rate(opt))
    logging.info("step %d/%d %s", current, config.train_steps, " ".join(f"{k}={v:.4g}" for k, v in logs.items()))


def weights_checksum(model) -> float:
    """Sum of the absolute values of every weight: equal on workers that agree."""
    return float(sum(tf.reduce_sum(tf.abs(tf.cast(v, tf.float64))) for v in model.weights))


def train(config: TrainConfig, preemption_notice: Optional[preemption.Notice] = None) -> dict[str, Any]:
    """Trains `config.method`; returns the final losses and step count.

    Args:
        config: `TrainConfig`.
        preemption_notice: `preemption.Notice` or None. Once it is requested, the run checkpoints the step it is at
            and raises `preemption.Preempted`. Defaults to None.
    """
    info, method = check_config(config)
    task = get_task(method.family)  # what the family does around its model: checked above, prepared below
    trains_backbone = train_backbone(config, method, info)
    strategy = make_strategy(config, method)
    chief = is_chief(strategy)
    write_run_config(config, info, method, trains_backbone, chief)
    if config.deterministic:
        keras.utils.set_random_seed(config.seed)

    # === Model and checkpoint ===
    model, step, checkpoint = build_model_and_checkpoint(config, method, info, trains_backbone, task, strategy)
    checkpoint_dir = os.path.join(config.model_dir, run_files.CHECKPOINT_DIR)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=config.max_checkpoints)
    # Every worker restores the chief's checkpoint: all take up the same step, whichever of them was killed when.
    restored = checkpoints.restore_latest_readable(checkpoint, manager)
    if not chief:  # every MWMS worker saves; only the chief's copy is kept, the others' go to a scratch folder
        scratch_dir = os.path.join(config.model_dir, ".workers", str(strategy.cluster_resolver.task_id))
        if files.exists(scratch_dir):
            files.remove_tree(scratch_dir)  # a killed job's
        manager = tf.train.CheckpointManager(checkpoint, scratch_dir, max_to_keep=config.max_checkpoints)
    if restored:
        logging.info("resumed from %s at step %d", restored, int(step.numpy()))
    elif config.init_checkpoint:
        restore_init_checkpoint(model, method, config.init_checkpoint)

    # === Input ===
    data = open_feature_cache(config, info, method, model, strategy) if config.feature_cache else info
    # What the family estimates from the data before its first step (a resumed run restores or reads it back).
    estimated = task.prepare(model, data, config, resumed=restored is not None)
    input_config = InputConfig(
        backbone=config.backbone,
        image_size=config.image_size or None,
        augment=config.augment,
        random_flip=config.random_flip,
        seed=config.seed,
        deterministic=config.deterministic,
    )
    # The task's phases before the main one (Veit's pretraining) have their own batch mix.
    schedule = phase_schedule(task.phases, config)

    # === Loop ===
    writer = (
        tf.summary.create_file_writer(os.path.join(config.model_dir, "train"))
        if chief
        else tf.summary.create_noop_writer()
    )
    if config.eval_split and not data.has_split(config.eval_split):
        raise ConfigError(f"--eval_split={config.eval_split} is absent from the feature cache {data.path!r}")
    best_dir = os.path.join(config.model_dir, run_files.BEST_DIR)  # written by the chief, read by every worker
    kept = checkpoints.steps(manager) if chief else []
    start_step, main_start = int(step.numpy()), main_phase_start(task.phases, config)
    evaluations = early_stopping.Evaluations(model, data, info, config, chief, best_dir, start_step, main_start, kept)
    if restored and chief:
        _check_best_weights(evaluations, start_step, restored, kept)
    saved_step = int(step.numpy()) if restored else None  # the step of the last checkpoint on disk

    def save_checkpoint() -> None:
        """A checkpoint of the step reached (unless it has one), its best weights written first: a checkpoint is
        only ever written after the best weights its history knows."""
        nonlocal saved_step
        current = int(step.numpy())
        if saved_step == current:
            return
        evaluations.save_best()
        manager.save(checkpoint_number=current)
        evaluations.commit(checkpoints.steps(manager))
        saved_step = current

    def stop_preempted() -> NoReturn:
        writer.flush()
        raise preemption.Preempted(int(step.numpy()))

    loops, live = {}, {}
    logs: dict[str, Any] = {}
    # How long a step and an evaluation take once traced: a phase's first loop and the first evaluation trace, the
    # others are steady ([steps, seconds] of every loop, and of the steady ones).
    timed = {"all": [0, 0.0], "steady": [0, 0.0]}
    eval_seconds: list[float] = []
    multi_worker = config.strategy == "multi_worker_mirrored"
    with contextlib.ExitStack() as stack:
        handler = None
        if multi_worker:  # every worker checkpoints the step they agree on, then stops
            handler = stack.enter_context(
                preemption.coordinated(strategy.cluster_resolver, save_checkpoint, stop_preempted)
            )
        while int(step.numpy()) < config.train_steps and not evaluations.exhausted():
            if handler is not None:
                handler.save_checkpoint_if_preempted()  # at every loop boundary, on every worker alike
            if preemption_notice is not None and preemption_notice.requested:
                save_checkpoint()
                stop_preempted()
            current = int(step.numpy())
            phase, boundary = next((p, end) for p, end in schedule if current < end)
            next_checkpoint = (current // config.checkpoint_steps + 1) * config.checkpoint_steps
            num_steps = min(config.log_steps, boundary - current, next_checkpoint - current)
            if evaluations.next_due(current) is not None:
                num_steps = min(num_steps, evaluations.next_due(current) - current)
            traces = phase not in loops
            if traces:
                if phase is None:
                    step_fn, names, ratio = model.train_step, model.loss_names, mix_ratio(config, method)
                else:
                    step_fn, names, ratio = getattr(model, f"{phase.name}_step"), phase.loss_names, phase.mix_ratio
                loops[phase] = _make_loop(strategy, step_fn, names, config.jit_compile)
                # Each phase's stream starts with the phase; a resumed run takes it up after the steps trained.
                phase_start = max((end for _, end in schedule if end <= current), default=0)
                live[phase] = _batches(
                    strategy, data, input_config, config, model, ratio, skip_steps=current - phase_start
                )
            start = time.perf_counter()
            with _peers_watched(strategy, multi_worker, saved_step):
                logs = {k: float(v) for k, v in loops[phase](live[phase], tf.constant(num_steps)).items()}
            elapsed = time.perf_counter() - start
            for key in ("all",) if traces else ("all", "steady"):
                timed[key] = [timed[key][0] + num_steps, timed[key][1] + elapsed]
            _check_finite(logs, current, num_steps, manager)
            step.assign_add(num_steps)
            current = int(step.numpy())
            logs["examples_per_second"] = config.batch_size * num_steps / elapsed
            _write_logs(writer, model, config, current, logs)
            if evaluations.due(current):
                start = time.perf_counter()
                evaluations.evaluate(current)
                eval_seconds.append(time.perf_counter() - start)
            if current % config.checkpoint_steps == 0 or current == config.train_steps or evaluations.exhausted():
                save_checkpoint()
    writer.flush()
    if multi_worker:  # the chief has written the best weights every worker reads back
        with _peers_watched(strategy, multi_worker, saved_step):
            _barrier(strategy)
    evaluated = evaluations.finish(int(step.numpy()))

    # === Outputs ===
    if not chief:
        files.remove_tree(manager.directory)
    result = {"step": int(step.numpy()), "method": method.name, **logs, **evaluated, **estimated}
    steps, seconds = timed["steady"] if timed["steady"][0] else timed["all"]
    result["step_seconds"] = seconds / steps if steps else None  # this process's steps (none on a finished run)
    steady = eval_seconds[1:] or eval_seconds
    result["eval_seconds"] = sum(steady) / len(steady) if steady else None
    result["weights_checksum"] = weights_checksum(model)
    if chief:  # each file whole or not at all (a full disk); result.json, written last, says the run is complete
        with files.written_whole(os.path.join(config.model_dir, run_files.MODEL_FILE)) as path:
            model.save(path)
        with files.written_whole(os.path.join(config.model_dir, run_files.BACKBONE_WEIGHTS_FILE)) as path:
            run_files.save_backbone_weights(model, config.backbone, path)
        run_files.write_json(os.path.join(config.model_dir, run_files.RESULT_FILE), result)
    return result
