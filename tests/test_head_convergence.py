"""The protocol's heads reach their convex reference: Noisy-FT-L against logistic regression.

Noisy-FT-L is a sigmoid linear layer on the frozen noisy backbone's
features: the model class of scikit-learn's logistic regression on the same
cached features. Trained under the reproduction's rules for head rows
(learning-rate grid and best-val weights), it must come within 2 mAP of
that reference on a small digits_mosaic case.

The two fits are regularized differently (early stopping on `val` against
an L2 penalty chosen on `val`) and learn from 200 clean images, so on a
600-image test split they differ by about one mAP point from one machine's
numerics to another's (within 0.5 on one, 1.2 below on another). The defect this
guards against was a gap of 5 to 12 points: heads stopped long before they
converged.
"""

import dataclasses

import pytest

from nlr_tf.reproduce import budgets, datasets, run_configs, runner
from nlr_tf.reproduce.plan import Run
from nlr_tf.reproduce.rows import MULTI_LABEL_REFERENCES, MULTI_LABEL_ROWS, NOISY


def _row(key):
    return next(r for r in MULTI_LABEL_ROWS + MULTI_LABEL_REFERENCES if r.key == key)


@pytest.mark.slow
def test_ft_last_reaches_the_logistic_regression_on_the_same_features(tmp_path):
    budget = dataclasses.replace(
        budgets.FULL,
        seeds=(0,),
        fractions=(0.2,),
        main_fraction=0.2,
        dataset_sizes=(1000, 400, 600),
        scratch=budgets.Stage(max_steps=300, eval_steps=100, patience=2, batch_size=60, learning_rates=(1e-3,)),
    )
    out = str(tmp_path)
    datasets.build_datasets(out, budget, ["multi_label"], print)
    noisy = Run("multi_label", 0, None, NOISY, 1e-3)
    noisy_dir = run_configs.run_dir(out, noisy)
    runner.train_and_evaluate(run_configs.train_config(noisy, out, budget))
    ft_last = [Run("multi_label", 0, 0.2, _row("ft_last"), lr) for lr in budget.heads.learning_rates]
    datasets.build_feature_cache(out, ft_last[0], noisy_dir, budget, print)
    trained = [runner.train_and_evaluate(run_configs.train_config(run, out, budget, noisy_dir)) for run in ft_last]
    head = max(trained, key=lambda m: m["val"])
    reference = runner.fit_reference(Run("multi_label", 0, 0.2, _row("logreg_clean")), out, budget)
    assert head["mAP"] >= reference["mAP"] - 0.02, (head["mAP"], reference["mAP"])
    assert head["val"] == pytest.approx(max(e["mAP"] for e in head["eval_history"]))
