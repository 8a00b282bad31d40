"""Training-time evaluation: evaluating a split, the best evaluation and its weights, and when patience runs out."""

import os
from typing import Any, Iterable, Optional

import tensorflow as tf
from absl import logging

from nlr_tf import metrics
from nlr_tf.backbones.sizes import DEFAULT_IMAGE_SIZE
from nlr_tf.data.schema import DatasetInfo
from nlr_tf.models import prediction
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.checks import eval_metric
from nlr_tf.training.config import TrainConfig
from nlr_tf.training.model_dir import CheckpointError

_EVAL_IN_MEMORY_BYTES = 256 << 20


def split_evaluator(model, data: DatasetInfo, config: TrainConfig):
    """A function returning mAP, APall and top-1 of the model on `config.eval_split` (from the feature cache if
    training uses one); its input pipeline is built once and read again at every evaluation."""
    # Cached features are small: large batches. Images: the training batch, which fits in memory.
    batch_size = 1024 if data.feature_dim else config.batch_size
    kwargs = dict(backbone=config.backbone, image_size=config.image_size, batch_size=batch_size)
    dataset = prediction.split_dataset(data, config.eval_split, **kwargs)
    kwargs["jit_compile"] = config.jit_compile
    # A split whose decoded inputs fit in a small memory budget is read once and kept: reading the records again
    # at every evaluation (a new iterator over the shards) cost more than the evaluation itself.
    side = config.image_size or DEFAULT_IMAGE_SIZE[config.backbone]
    # float32 values either way: a float16 cache's features are decoded to float32 when parsed. A parsed record
    # also holds four float32 label vectors of d (noisy, verified labels and mask, truth): with thousands of
    # classes they outweigh the features.
    bytes_per_record = 4 * (data.feature_dim or side * side * 3) + 4 * 4 * data.num_classes
    if data.splits[config.eval_split].num_records * bytes_per_record <= _EVAL_IN_MEMORY_BYTES:
        dataset = list(dataset)

    def evaluate() -> dict[str, float]:
        # The verified entries only: memory grows with them and the images, not with images x classes.
        p = prediction.predict_entries(model, data, config.eval_split, top_k=0, truth=False, dataset=dataset, **kwargs)
        report = metrics.evaluate(p.entries)
        return {"mAP": report.map, "APall": report.ap_all, "top1": report.top1}

    return evaluate


def best_evaluation(history: list[dict], metric: str, after: int = 0) -> Optional[dict]:
    """The evaluation with the highest `metric` (the earliest on ties), among those after step `after`."""
    entries = [e for e in history if e["step"] > after]
    return max(entries, key=lambda e: (e[metric], -e["step"])) if entries else None


def patience_exhausted(history: list[dict], metric: str, patience: int, after: int = 0) -> bool:
    """True once `patience` evaluations in a row have not beaten the best one."""
    best = best_evaluation(history, metric, after)
    return bool(patience) and best is not None and sum(e["step"] > best["step"] for e in history) >= patience


class Evaluations:
    """The evaluations of one run on `--eval_split`, and the weights of the best one.

    The history is read back when a run resumes (up to its restored step).
    Evaluations count only in the model's main phase (after Veit's
    pretraining, for example). With `--restore_best`, the best weights since
    the last checkpoint stay in memory (a new best costs no disk write) and
    are written under `best/ckpt-STEP` just before that checkpoint; once the
    checkpoint is saved, only the weights of the best evaluation each kept
    checkpoint's history knows stay. So whenever a run is killed, and
    whichever kept checkpoint it resumes from (an older one if the newest is
    damaged), `best/` holds the weights of the best evaluation the restored
    history knows (and perhaps of newer ones, which the resumed run
    deletes). Only the chief writes and deletes them; every worker reads them
    at the end.

    Args:
        model: the model being trained.
        data: `DatasetInfo`. The training data (images or a feature cache).
        info: `DatasetInfo`. The dataset of images.
        config: `TrainConfig`.
        chief: bool. Whether this worker writes the run's files.
        best_dir: str. Where the best weights are kept.
        step: int. The step the run starts (or resumes) at.
        main_start: int. The step the main phase starts at (after label
            cleaning's pretraining, say): evaluations begin after it.
        kept_steps: the steps of the checkpoints on disk.
    """

    def __init__(
        self,
        model,
        data: DatasetInfo,
        info: DatasetInfo,
        config: TrainConfig,
        chief: bool,
        best_dir: str,
        step: int,
        main_start: int = 0,
        kept_steps: tuple[int, ...] = (),
    ):
        self.model, self.config, self.chief = model, config, chief
        # Evaluations begin with the main phase (after label cleaning's pretraining, say).
        self.metric, self.after = eval_metric(config, info), main_start
        self.history = [e for e in run_files.read_eval_history(config.model_dir) if e["step"] <= step]
        self.evaluate_split = split_evaluator(model, data, config) if config.eval_steps else None
        self.writer = None
        if config.eval_steps and chief:
            self.writer = tf.summary.create_file_writer(run_files.eval_dir(config.model_dir, config.eval_split))
        self.best_dir = best_dir if config.restore_best else None
        if self.best_dir:
            self.best_checkpoint = tf.train.Checkpoint(model=model)
            # A resumed run: the weights of evaluations after the restored step are not the history's.
            self._keep_known_bests(kept_steps)
        self.pending_best = None

    def due(self, step: int) -> bool:
        every = self.config.eval_steps
        return bool(every) and (step % every == 0 or step == self.config.train_steps) and step > self.after

    def next_due(self, step: int) -> Optional[int]:
        """The next step at which to evaluate (None: never)."""
        every = self.config.eval_steps
        return (step // every + 1) * every if every else None

    def evaluate(self, step: int) -> None:
        scores = self.evaluate_split()
        self.history.append({"step": step, **scores})
        if self.writer is not None:
            with self.writer.as_default(step=step):
                for name, value in scores.items():
                    tf.summary.scalar(name, value)
        logging.info(
            "step %d %s: %s", step, self.config.eval_split, " ".join(f"{k}={v:.4g}" for k, v in scores.items())
        )
        if self.chief:
            run_files.write_eval_history(self.config.model_dir, self.history)
        if self.best_dir and self.chief and self.best()["step"] == step:  # the chief writes them (`save_best`)
            self.pending_best = (step, self.model.get_weights())

    def best(self) -> Optional[dict]:
        return best_evaluation(self.history, self.metric, self.after)

    def exhausted(self) -> bool:
        return patience_exhausted(self.history, self.metric, self.config.early_stopping_patience, self.after)

    def best_prefix(self, step: int) -> str:
        return os.path.join(self.best_dir, f"ckpt-{step}")

    def save_best(self) -> None:
        """Writes the best weights kept in memory, under `best/ckpt-STEP` (called before each checkpoint)."""
        if self.pending_best is None:
            return
        weights = self.model.get_weights()
        self.model.set_weights(self.pending_best[1])
        self.best_checkpoint.write(self.best_prefix(self.pending_best[0]))
        self.model.set_weights(weights)
        self.pending_best = None

    def commit(self, kept_steps: Iterable[int] = ()) -> None:
        """Called once a checkpoint is saved, with the steps of the checkpoints on disk: only the weights of the
        best evaluation each of them knows stay (the chief's work); `best/checkpoint` names the newest's."""
        self._keep_known_bests(kept_steps)

    def _keep_known_bests(self, kept_steps: Iterable[int]) -> None:
        if not self.best_dir or not self.chief:
            return
        best = self.best()
        keep = self.best_prefix(best["step"]) if best else None
        known = [
            best_evaluation([e for e in self.history if e["step"] <= s], self.metric, self.after) for s in kept_steps
        ]
        kept = {self.best_prefix(e["step"]) + "." for e in known if e} | ({keep + "."} if keep else set())
        for path in tf.io.gfile.glob(os.path.join(self.best_dir, "ckpt-*")):
            if not any(path.startswith(prefix) for prefix in kept):
                tf.io.gfile.remove(path)
        state = os.path.join(self.best_dir, "checkpoint")
        if keep and tf.io.gfile.exists(keep + ".index"):
            # The CheckpointState text proto tf.train.latest_checkpoint reads, with the relative path
            # tf.train.CheckpointManager writes (TensorFlow's writer of it is deprecated).
            name = os.path.basename(keep)
            temporary = state + ".tmp"
            with tf.io.gfile.GFile(temporary, "w") as f:
                f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
            tf.io.gfile.rename(temporary, state, overwrite=True)
        elif tf.io.gfile.exists(state):
            tf.io.gfile.remove(state)

    def finish(self, step: int) -> dict[str, Any]:
        """Restores the best weights (with --restore_best); returns what the run's result reports of its evaluations."""
        if self.writer is not None:
            self.writer.flush()
        best = self.best()
        restored = bool(self.best_dir) and best is not None
        if restored:
            prefix = self.best_prefix(best["step"])
            if not tf.io.gfile.exists(prefix + ".index"):
                raise CheckpointError(
                    f"{self.best_dir} lacks the best evaluation's weights (step {best['step']}): they were deleted "
                    "or written by another run; start the run in a new --model_dir"
                )
            self.best_checkpoint.read(prefix).assert_existing_objects_matched()
            logging.info(
                "restored the best %s weights: step %d, %s=%.4g",
                self.config.eval_split,
                best["step"],
                self.metric,
                best[self.metric],
            )
        if not self.history:
            return {}
        return {
            "eval_history": self.history,
            "best_step": best["step"] if best else None,
            f"best_{self.metric}": best[self.metric] if best else None,
            "stopped_early": step < self.config.train_steps,
            "restored_best": restored,
        }
