"""Forward correction's training (Patrini et al. 2017): T estimated once, before the first step.

`--transition=clean_pairs` counts T from the clean set's paired noisy and
verified labels (Hu et al. 2019's Forward row); `--transition=anchor` reads
it off the starting noisy model's own predictions on the noisy set at
anchor points (Patrini et al.'s estimator). T is a weight of the model
(`ForwardModel.set_transition`): a resumed run restores it with the
checkpoint.
"""

from typing import Optional

import numpy as np

from nlr_tf.data.parsing import label_arrays
from nlr_tf.models import prediction
from nlr_tf.training.tasks.base import Task

ANCHOR_PERCENTILE = 97.0  # Patrini et al.'s robust anchor: a high percentile rather than the maximum


class ForwardTask(Task):
    """Checks that T can be estimated as `--transition` asks, and estimates it before the first step."""

    def check(self, config, info) -> Optional[str]:
        if config.transition == "clean_pairs" and not info.has_split(config.clean_split):
            return (
                f"--transition=clean_pairs counts T from the paired labels of split {config.clean_split!r}, "
                f"absent from dataset {config.dataset!r}"
            )
        if config.transition == "anchor" and not config.init_checkpoint:
            return "--transition=anchor reads T off a noisy model's predictions: pass --init_checkpoint"
        return None

    def prepare(self, model, data, config, resumed=False) -> dict:
        """Estimates T and sets it in the model; returns it for the run's record."""
        if resumed:  # T is a weight: the checkpoint restored it
            return {}
        if config.transition == "clean_pairs":
            labels = label_arrays(data.split_files(config.clean_split), model.num_classes)
            transition = transition_from_pairs(
                labels["noisy_labels"], labels["verified_labels"], labels["verified_mask"], model.multi_label
            )
        else:  # the starting (noisy) model's own predictions on the noisy set
            scores = prediction.predict(
                model, data, config.noisy_split, backbone=config.backbone, image_size=config.image_size
            )["scores"]
            transition = transition_from_anchors(scores, model.multi_label)
        model.set_transition(transition)
        return {"transition": transition.tolist(), "transition_source": config.transition}


def transition_from_pairs(noisy: np.ndarray, verified: np.ndarray, mask: np.ndarray, multi_label: bool) -> np.ndarray:
    """T counted from images that carry both noisy and verified labels (Hu's Forward row).

    Args:
        noisy, verified, mask: float [N, d] multi-hot noisy labels, verified
            labels and which entries are verified.
        multi_label: bool.

    Single-label: row i is the distribution of the noisy label among the
    images verified to be class i (the identity for a class never verified).
    Multi-label: per class, the share of verified negatives labelled
    positive and of verified positives left unlabelled (0 when unknown).
    """
    noisy, verified, mask = (np.asarray(a, np.float64) for a in (noisy, verified, mask))
    d = noisy.shape[1]
    if multi_label:
        pos, neg = verified * mask, (1.0 - verified) * mask
        fp = np.divide((neg * noisy).sum(0), neg.sum(0), out=np.zeros(d), where=neg.sum(0) > 0)
        miss = np.divide((pos * (1.0 - noisy)).sum(0), pos.sum(0), out=np.zeros(d), where=pos.sum(0) > 0)
        return np.stack([fp, miss]).astype(np.float32)
    rows = (verified * mask).sum(1) == 1  # images verified to be exactly one class ...
    rows &= noisy.sum(1) == 1  # ... with exactly one noisy label
    counts = (verified[rows] * mask[rows]).T @ noisy[rows]  # [true, noisy]
    totals = counts.sum(1, keepdims=True)
    transition = np.where(totals > 0, counts / np.maximum(totals, 1), np.eye(d))
    return transition.astype(np.float32)


def transition_from_anchors(scores: np.ndarray, multi_label: bool, percentile: float = ANCHOR_PERCENTILE) -> np.ndarray:
    """Patrini et al.'s estimator: T read off a noisy model's predictions at anchor points.

    Args:
        scores: float [N, d]. A model trained on noisy labels, on the noisy
            set: estimates of P(noisy label | x).
        multi_label: bool.
        percentile: float. The anchor of class i is the image at this
            percentile of `scores[:, i]` (not the maximum: robust to outliers).

    Single-label: row i of T is the prediction at class i's anchor
    (renormalized). Multi-label, per class: the prediction at the high
    anchor estimates 1 - miss rate, the one at the low anchor (the mirrored
    percentile) the false-positive rate.
    """
    scores = np.asarray(scores, np.float64)
    d = scores.shape[1]
    if multi_label:
        hi = np.array([np.percentile(scores[:, j], percentile, method="nearest") for j in range(d)])
        lo = np.array([np.percentile(scores[:, j], 100.0 - percentile, method="nearest") for j in range(d)])
        return np.clip(np.stack([lo, 1.0 - hi]), 0.0, 1.0).astype(np.float32)
    transition = np.zeros((d, d))
    for i in range(d):
        target = np.percentile(scores[:, i], percentile, method="nearest")
        anchor = int(np.argmin(np.abs(scores[:, i] - target)))
        transition[i] = scores[anchor] / scores[anchor].sum()
    return transition.astype(np.float32)
