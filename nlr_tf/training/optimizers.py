"""Optimizers and learning-rate schedules of the papers' training details.

Veit et al. 2017: RMSProp, learning rate 0.045 decayed by 0.94 every 2
epochs (Inception V3's recipe: rho 0.9, momentum 0.9, epsilon 1.0). Hu et
al. 2019: RMSProp decayed by 0.9 every 2 epochs for the backbones, Adam for
the heads. The decay is a staircase on the optimizer's own step count.
"""

import keras

from nlr_tf.training.config import OPTIMIZERS


def learning_rate_schedule(learning_rate: float, decay_rate: float, decay_steps: int):
    """Constant when `decay_rate` is 1 (or `decay_steps` 0), else a staircase exponential decay."""
    if learning_rate <= 0:
        raise ValueError(f"learning rates must be > 0. Received: learning_rate={learning_rate}")
    if decay_rate >= 1.0 or decay_steps <= 0:
        return learning_rate
    return keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps, decay_rate, staircase=True)


def build_optimizer(kind: str, learning_rate, name: str) -> keras.optimizers.Optimizer:
    """An optimizer of `kind` with `learning_rate` (a float or a schedule)."""
    if kind == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, rho=0.9, momentum=0.9, epsilon=1.0, name=name)
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate, name=name)
    if kind == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, name=name)
    raise ValueError(f"unknown optimizer; choose one of {', '.join(OPTIMIZERS)}. Received: optimizer={kind}")


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    lr = optimizer.learning_rate
    return float(lr.numpy() if hasattr(lr, "numpy") else lr)
