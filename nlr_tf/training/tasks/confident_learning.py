"""Confident learning's training: the noisy examples cleanlab flags, found before the first step and kept.

Every noisy-set example gets out-of-sample predicted probabilities from
k-fold logistic regression on the feature cache (`nlr_tf.models.logistic`),
and cleanlab's `find_label_issues` flags those whose noisy labels look
wrong (`nlr_tf.models.label_issues`). The flagged ids go to the model
(`ConfidentLearningModel.set_label_issues`) and to the model dir
(`label_issues.json`), from which a resumed run reads them back.
"""

from typing import Optional

from nlr_tf.data.feature_cache import read_split
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
        if record is None:
            split = read_split(data, config.noisy_split)
            ids, noisy = split["id"].tolist(), split["noisy_labels"] > 0
            probs = out_of_sample_probabilities(split["features"], noisy, model.multi_label, config.seed, FOLDS)
            flagged = example_flags(probs, noisy, model.multi_label)
            record = {
                "num_noisy": len(ids),
                "num_issues": int(flagged.sum()),
                "folds": FOLDS,
                "ids": [i.decode("utf-8") for i, f in zip(ids, flagged) if f],
            }
            run_files.write_label_issues(config.model_dir, record)
        model.set_label_issues(record["ids"])
        return {"label_issues": record["num_issues"], "noisy_examples": record["num_noisy"]}
