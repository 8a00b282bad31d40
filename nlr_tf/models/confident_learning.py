"""Confident learning (Northcutt et al. 2021, cleanlab): drop the noisy examples it finds mislabelled, then train."""

import keras

from nlr_tf.models.classifier import SigmoidClassifier
from nlr_tf.models.example_table import ExampleTable

# k of the k-fold out-of-sample probabilities the flags come from (its training task,
# `nlr_tf.training.tasks.confident_learning`; the reproduction's protocol quotes it from here).
FOLDS = 5


@keras.saving.register_keras_serializable(package="nlr_tf")
class ConfidentLearningModel(SigmoidClassifier):
    """The sigmoid classifier, trained without the noisy examples confident learning flags.

    Before the first step, its training task gives every noisy-set example
    out-of-sample predicted probabilities from k-fold logistic regression on
    the feature cache, and cleanlab's `find_label_issues` flags the examples
    whose noisy labels look wrong; `set_label_issues` hands the model their
    ids. Training then fits the classifier to the remaining noisy examples'
    labels and to the clean set's verified labels: a flagged example in a
    batch counts for nothing.

    Outputs: `scores` and `logits`, [B, d].

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        multi_label: bool. Whether the data is multi-label. Defaults to True.
        **kwargs: standard model arguments.

    Reference:
        Northcutt, Jiang and Chuang, Confident Learning: Estimating
        Uncertainty in Dataset Labels, JAIR 2021; the `cleanlab` library.
    """

    family = "confident_learning"
    needs_ids = True  # its train step looks each example up by id

    def __init__(self, backbone, num_classes, multi_label=True, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.multi_label = bool(multi_label)
        self.issues = None  # an `ExampleTable` (id -> 1.0 if flagged), set by `set_label_issues`

    def set_label_issues(self, ids: list[str]) -> None:
        """The ids of the noisy examples whose labels are issues: training drops them."""
        self.issues = ExampleTable(list(ids), [1.0] * len(ids), default=0.0)

    def example_masks(self, batch):
        """The classifier's masks, less every entry of a flagged noisy example."""
        noisy_mask, clean_mask = super().example_masks(batch)
        if self.issues is not None:
            noisy_mask = noisy_mask * (1.0 - self.issues(batch["id"]))
        return noisy_mask, clean_mask

    def get_config(self):
        config = super().get_config()
        config.update({"multi_label": self.multi_label})
        return config
