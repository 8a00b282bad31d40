"""`Task`: what a family's training does around its model, and the phases a run may take before its main one.

A method model holds its layers, its graph, its outputs and its train
step; it never sees the `TrainConfig` and never writes a file. Its family's
task (as TF Model Garden's `Task` beside its model) does the rest:

- `check(config, info)`: refuses, in one line, a configuration the family
  cannot run (before anything is built or written);
- `part_learning_rates(config)`: the rates of the model's parts other than
  the backbone and its `head_part`;
- `phases`: `Phase`s run before the main one, each with the model's
  `NAME_step` (label cleaning's pretraining);
- `prepare(model, data, config, resumed)`: what the family estimates from
  the data before the first step (forward correction's T, confident
  learning's label issues, CleanNet's label weights), handed to the model
  through its setters; the files it keeps are the model dir's
  (`nlr_tf.training.model_dir`), read back when a run resumes.

A family with none of these has the base `Task`. Its options are declared
once, by the family (`nlr_tf.models.methods`); the configuration checks
refuse them for other families and values outside the family's choices.
"""

import dataclasses
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class Phase:
    """A training phase a family runs before its main one (e.g. label cleaning's pretraining).

    The model's `NAME_step` method takes its steps.

    Args:
        name: str. The phase's name; the model's step method is `{name}_step`.
        steps_option: str. The `TrainConfig` field (an option of the
            family) that holds its number of steps (0: skipped). They count
            within `train_steps`.
        mix_ratio: str. The noisy:clean mix of its batches.
        loss_names: tuple of str. The keys of the dict its step returns.
    """

    name: str
    steps_option: str
    mix_ratio: str
    loss_names: tuple[str, ...]


def phase_schedule(phases: tuple[Phase, ...], config) -> list[tuple[Optional[Phase], int]]:
    """The phases of a run in order, each with the step it ends at; the main phase (None) ends at `train_steps`.

    Args:
        phases: the task's `phases`.
        config: a `TrainConfig` (read: each phase's `steps_option`, `train_steps`).
    """
    schedule, end = [], 0
    for phase in phases:
        steps = getattr(config, phase.steps_option)
        if steps:
            end += steps
            schedule.append((phase, end))
    return schedule + [(None, config.train_steps)]


def main_phase_start(phases: tuple[Phase, ...], config) -> int:
    """The step the main phase starts at: the steps of every phase before it."""
    return sum(getattr(config, phase.steps_option) for phase in phases)


class Task:
    """A family's training around its model; this base does nothing (the classifier, noise regularization, Misra)."""

    phases: tuple[Phase, ...] = ()

    def check(self, config, info) -> Optional[str]:
        """Why the family cannot run `config` (a `TrainConfig`) on `info` (`DatasetInfo`), in one line; None if it
        can."""
        return None

    def part_learning_rates(self, config) -> dict[str, Any]:
        """Learning rates (or schedules) of the model's parts other than the backbone and its `head_part`."""
        return {}

    def prepare(self, model, data, config, resumed: bool = False) -> dict[str, Any]:
        """Estimates from `data` what the model needs before its first step and hands it over; returns the run's
        record of it (for train_result.json).

        Args:
            model: the family's model, built (and restored, when resumed).
            data: `DatasetInfo`. The training data (images or a feature cache).
            config: `TrainConfig`.
            resumed: bool. The run resumes from a checkpoint: what lives in
                the model's weights was restored with them, what the model
                dir keeps is read back.
        """
        return {}
