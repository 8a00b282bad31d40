"""Label cleaning's training (Veit et al. 2017): the cleaning network's optional pretraining and its rates."""

import keras

from nlr_tf.training.tasks.base import Phase, Task


class LabelCleaningTask(Task):
    """The cleaning network alone first (`--cleaning_pretrain_steps`, on the clean set), then both nets jointly.

    The cleaning network's rate is `--cleaning_learning_rate`, and after a
    pretraining phase `--cleaning_joint_learning_rate`.
    """

    phases = (
        Phase(
            name="pretrain",
            steps_option="cleaning_pretrain_steps",
            mix_ratio="0:1",  # the cleaning net learns from the clean set alone
            loss_names=("loss", "clean_loss"),
        ),
    )

    def part_learning_rates(self, config):
        if config.cleaning_pretrain_steps:
            rate = keras.optimizers.schedules.PiecewiseConstantDecay(
                [config.cleaning_pretrain_steps], [config.cleaning_learning_rate, config.cleaning_joint_learning_rate]
            )
            return {"cleaning": rate}
        return {"cleaning": config.cleaning_learning_rate}
