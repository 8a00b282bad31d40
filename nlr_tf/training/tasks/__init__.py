"""Each family's training task: what its training does around its model (see `base.Task`).

A family without such work (the classifier, noise regularization, Misra)
has the base `Task`.
"""

from nlr_tf.training.tasks.base import Phase, Task, main_phase_start, phase_schedule
from nlr_tf.training.tasks.cleannet import CleanNetTask
from nlr_tf.training.tasks.confident_learning import ConfidentLearningTask
from nlr_tf.training.tasks.forward import ForwardTask
from nlr_tf.training.tasks.label_cleaning import LabelCleaningTask

__all__ = ["Phase", "Task", "get_task", "main_phase_start", "phase_schedule"]

_TASKS = {
    "cleannet": CleanNetTask,
    "confident_learning": ConfidentLearningTask,
    "forward": ForwardTask,
    "label_cleaning": LabelCleaningTask,
}


def get_task(family: str) -> Task:
    """The training task of a family (a key of `nlr_tf.models.methods.FAMILIES`)."""
    return _TASKS.get(family, Task)()
