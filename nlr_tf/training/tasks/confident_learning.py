"""Confident learning's training: the noisy examples cleanlab flags, found before the first step and kept.

Every noisy-set example gets out-of-sample predicted probabilities from
k-fold logistic regression on the feature cache (`nlr_tf.models.logistic`),
and cleanlab's `find_label_issues` flags those whose noisy labels look
wrong (`nlr_tf.models.label_issues`). The flagged ids go to the model
(`ConfidentLearningModel.set_label_issues`) and to the model dir
(`label_issues.json`), from which a resumed run reads them back.

The issues depend only on the cache's noisy split, the seed and the
estimator, not on the learning rate or the clean set: they are kept beside
the feature cache (`feature_cache.write_estimate`) under a key of all of
these, and every later run on the same cache and seed reads them there.
"""

from importlib.metadata import version
from typing import Optional

from nlr_tf.data.feature_cache import estimate_key, read_estimate, read_split, write_estimate
from nlr_tf.models.confident_learning import FOLDS
from nlr_tf.models.label_issues import example_flags
from nlr_tf.models.logistic import out_of_sample_probabilities
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.tasks.base import Task


class ConfidentLearningTask(Task):
    """Needs a feature cache; finds (or reads back) the label issues before the first step."""

    def check(self, config, info) -> Optional[str]:
        if not config.feature_cache:
            return "--method=confident_learning finds label issues on cached features: pass --feature_cache"
        return None

    def prepare(self, model, data, config, resumed=False) -> dict:
        record = run_files.read_label_issues(config.model_dir) if resumed else None
        estimated = False
        if record is None:
            split = read_split(data, config.noisy_split)
            ids, noisy = split["id"].tolist(), split["noisy_labels"] > 0
            key = estimate_key(
                split["id"], split["features"], noisy, model.multi_label, config.seed, FOLDS,
                version("scikit-learn"), version("cleanlab"),
            )  # fmt: skip
            record = read_estimate(data, "label_issues", key)
            if record is None:
                probs = out_of_sample_probabilities(split["features"], noisy, model.multi_label, config.seed, FOLDS)
                flagged = example_flags(probs, noisy, model.multi_label)
                record = {
                    "num_noisy": len(ids),
                    "num_issues": int(flagged.sum()),
                    "folds": FOLDS,
                    "ids": [i.decode("utf-8") for i, f in zip(ids, flagged) if f],
                }
                estimated = True
                write_estimate(data, "label_issues", key, record)
            run_files.write_label_issues(config.model_dir, record)
        model.set_label_issues(record["ids"])
        return {
            "label_issues": record["num_issues"],
            "noisy_examples": record["num_noisy"],
            # False: read back on resume, or from the estimate kept beside the feature cache.
            "label_issues_estimated": estimated,
        }
