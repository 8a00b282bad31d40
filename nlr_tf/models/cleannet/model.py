"""Lee et al. 2018 (CleanNet-wsoft): the classifier, its noisy labels weighted by a learned verification similarity.

CleanNet verifies a label c of an image x by comparing two embeddings of
the features of a network trained on the noisy labels: a query embedding of
x and a class embedding of c, built by attention over a reference set of
class-c features. Their cosine similarity is high for a correct label and
low for a wrong one; it learns from the verification labels the clean set
provides (its images' noisy labels, judged right or wrong), helped by an
auto-encoder on the query and an unsupervised loss on the noisy set. The
classifier then trains on the noisy labels, each weighted by max(0, cos):
CleanNet-wsoft, Hu et al. 2019 Table 4 row 3.

Where each piece is: this module, the classifier (`CleanNetModel`) and the
settings of CleanNet's own training below; `cleannet_network`, CleanNet and
its losses; `nlr_tf.training.tasks.cleannet`, the reference set, CleanNet's
training and the weights it gives, before the classifier's first step.

What Lee et al. leave open, and what this implementation chose:

- the features: any cache of a noisy-label network's features
  (`--reference_features`, else the run's `--feature_cache`); Lee et al.
  use ResNet-50 pool5 of a network trained on the noisy data;
- the input normalization: L2 (their code offers log, L2 or none);
- the reference set: `NUM_REFERENCES` k-means centres of the class's
  noisily labelled features (as their code, with scikit-learn's k-means
  on at most `MAX_KMEANS_POINTS` features per class);
- the schedule: `--cleannet_steps` of SGD with momentum, rate 0.01 decayed
  tenfold halfway, 32 verified and 32 unverified pairs a step, the weights
  with the best verification accuracy on the validation split kept (their
  code's defaults, with fewer steps than their 60,000);
- multi-label data, which Lee et al. do not treat: each (image, noisily
  present class) pair is verified and weighted on its own; an absent noisy
  label keeps weight 1 (CleanNet verifies labels, not their absence). On
  single-label data the example's weight is its noisy class's.
"""

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.models.classifier import SigmoidClassifier
from nlr_tf.models.example_table import ExampleTable

# CleanNet's own training (their code's defaults), run by `nlr_tf.training.tasks.cleannet`: kept beside the
# choices above, which the reproduction's protocol quotes from here.
NUM_REFERENCES = 32
MAX_KMEANS_POINTS = 10000
LEARNING_RATE = 0.01
MOMENTUM = 0.9
BATCH = 32  # verified pairs per step, and as many unverified ones
EVALUATIONS = 10  # validation accuracy measured this many times over the steps


@keras.saving.register_keras_serializable(package="nlr_tf")
class CleanNetModel(SigmoidClassifier):
    """The sigmoid classifier, its noisy labels weighted by CleanNet's verification similarity (CleanNet-wsoft).

    Before the first step, its training task trains CleanNet on the
    reference features (see the module docstring) and gives every noisy
    label of every noisy-set example its weight max(0, cos), which
    `set_label_weights` hands the model. Training fits the classifier to
    the noisy labels, each entry's binary cross-entropy times its weight:
    multi-label, a noisily present class's own weight (absent ones 1);
    single-label, the weight of the example's noisy class on all of its
    entries. Clean-set examples, if the batch mix has any, count fully.

    Outputs: `scores` and `logits`, [B, d].

    Args:
        backbone: `keras.Model`. Images to features.
        num_classes: int. Number of classes d.
        multi_label: bool. Whether the data is multi-label. Defaults to True.
        **kwargs: standard model arguments.

    Reference:
        Lee et al., CleanNet: Transfer Learning for Scalable Image Classifier
        Training with Label Noise, CVPR 2018 (w_soft, Sec. 3.3).
    """

    family = "cleannet"
    needs_ids = True

    def __init__(self, backbone, num_classes, multi_label=True, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.multi_label = bool(multi_label)
        self.label_weights = None  # an `ExampleTable` (id -> [d] weights), set by `set_label_weights`

    def set_label_weights(self, ids: list[str], weights: np.ndarray) -> None:
        """Every noisy example's weights [N, d] (one per class, by example id): what CleanNet verified."""
        weights = np.asarray(weights, np.float32)
        if weights.ndim != 2 or weights.shape != (len(ids), self.num_classes):
            raise ValueError(
                f"`weights` must have shape ({len(ids)}, {self.num_classes}). Received: weights.shape={weights.shape}"
            )
        self.label_weights = ExampleTable([str(i) for i in ids], weights, default=1.0)

    def entry_weights(self, batch):
        """Each entry's loss weight [B, d] (see the class docstring)."""
        if self.label_weights is None:
            return None
        weights = self.label_weights(batch["id"])
        noisy = tf.cast(batch["noisy_labels"], weights.dtype)
        if self.multi_label:
            per_entry = noisy * weights + (1.0 - noisy)
        else:
            labelled = tf.reduce_max(noisy, axis=1, keepdims=True)
            example = tf.reduce_sum(noisy * weights, axis=1, keepdims=True) + (1.0 - labelled)
            per_entry = tf.broadcast_to(example, tf.shape(noisy))
        is_clean = tf.cast(batch["is_clean"], weights.dtype)[:, None]
        return is_clean + (1.0 - is_clean) * per_entry

    def get_config(self):
        return {**super().get_config(), "multi_label": self.multi_label}
