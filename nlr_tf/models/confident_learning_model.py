"""Confident learning (Northcutt et al. 2021, cleanlab): drop the noisy examples it finds mislabelled, then train."""

import json
import os

import keras

from nlr_tf.models.classifier_model import SigmoidClassifier
from nlr_tf.models.example_table import ExampleTable
from nlr_tf.models.label_issues import example_flags
from nlr_tf.models.logistic import out_of_sample_probabilities

ISSUES_FILE = "label_issues.json"  # in the model dir: the dropped examples, read again when a run resumes
FOLDS = 5


@keras.saving.register_keras_serializable(package="nlr_tf")
class ConfidentLearningModel(SigmoidClassifier):
    """The sigmoid classifier, trained without the noisy examples confident learning flags.

    Before the first step (`fit_before_training`), every noisy-set example
    gets out-of-sample predicted probabilities from k-fold logistic
    regression on the feature cache, and cleanlab's `find_label_issues`
    flags the examples whose noisy labels look wrong. Training then fits the
    classifier to the remaining noisy examples' labels and to the clean
    set's verified labels: a flagged example in a batch counts for nothing.
    The flagged ids are kept in the model dir (`label_issues.json`) for a
    resumed run.

    Outputs: `scores` and `logits`, [B, d].

    Reference:
        Northcutt, Jiang and Chuang, Confident Learning: Estimating
        Uncertainty in Dataset Labels, JAIR 2021; the `cleanlab` library.
    """

    family = "confident_learning"
    needs_ids = True  # its train step looks each example up by id

    def __init__(self, backbone, num_classes, multi_label=True, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.multi_label = bool(multi_label)
        self.issues = None  # an `ExampleTable` (id -> 1.0 if flagged), set by `fit_before_training`

    @classmethod
    def config_error(cls, config, info):
        if not config.feature_cache:
            return "--method=confident_learning finds label issues on cached features: pass --feature_cache"
        return None

    def fit_before_training(self, data, config, resumed=False) -> dict:
        path = os.path.join(config.model_dir, ISSUES_FILE)
        if resumed and os.path.isfile(path):
            with open(path) as f:
                record = json.load(f)
        else:
            from nlr_tf.data.feature_cache import read_split

            split = read_split(data, config.noisy_split)
            ids, noisy = split["id"].tolist(), split["noisy_labels"] > 0
            probs = out_of_sample_probabilities(split["features"], noisy, self.multi_label, config.seed, FOLDS)
            flagged = example_flags(probs, noisy, self.multi_label)
            record = {
                "num_noisy": len(ids),
                "num_issues": int(flagged.sum()),
                "folds": FOLDS,
                "ids": [i.decode("utf-8") for i, f in zip(ids, flagged) if f],
            }
            with open(path, "w") as f:
                json.dump(record, f)
        self.issues = ExampleTable(record["ids"], [1.0] * len(record["ids"]), default=0.0)
        return {"label_issues": record["num_issues"], "noisy_examples": record["num_noisy"]}

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
