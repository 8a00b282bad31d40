"""CleanNet-wsoft's training (Lee et al. 2018): CleanNet trained first, its similarities the classifier's weights.

Before the classifier's first step: the reference set (k-means centres of
each class's noisily labelled features), CleanNet's own training on the
reference features (`--reference_features`, else the run's feature cache)
with the clean set's verification labels, and every noisy label's weight
max(0, cos). The weights go to the model (`CleanNetModel.set_label_weights`)
and to the model dir (`cleannet_weights.npz`, read back when a run
resumes), the trained CleanNet beside them (`cleannet.keras`). The choices
Lee et al. leave open are listed in `nlr_tf.models.cleannet.model`.
"""

from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.data.feature_cache import read_split, weights_source
from nlr_tf.data.parsing import label_arrays
from nlr_tf.data.schema import DatasetError, load_dataset_info
from nlr_tf.models.cleannet.model import (
    BATCH,
    EVALUATIONS,
    LEARNING_RATE,
    MAX_KMEANS_POINTS,
    MOMENTUM,
    NUM_REFERENCES,
)
from nlr_tf.models.cleannet.network import THRESHOLD, CleanNet
from nlr_tf.training import model_dir as run_files
from nlr_tf.training.tasks.base import Task


class CleanNetTask(Task):
    """Checks the reference features; trains CleanNet (or reads its weights back) before the first step."""

    def check(self, config, info) -> Optional[str]:
        source = config.reference_features or config.feature_cache
        if not source:
            return (
                "--method=cleannet embeds the features of a network trained on the noisy labels: pass "
                "--reference_features (a feature cache made by nlr-extract-features) or --feature_cache"
            )
        if not info.has_split(config.clean_split):
            return f"--method=cleannet learns from the verification labels of split {config.clean_split!r}, absent"
        if not len(label_pairs(label_arrays(info.split_files(config.clean_split), info.num_classes), True)["row"]):
            return f"split {config.clean_split!r} verifies no noisy label: CleanNet has nothing to learn from"
        if not config.reference_features:
            return None  # the run's own feature cache: the trainer checks (or builds) it
        try:
            cache = load_dataset_info(source)
        except DatasetError as e:
            return f"--reference_features: {e}"
        made_from = cache.provenance.get("feature_cache", {}).get("source_dataset")
        if not cache.feature_dim:
            return f"--reference_features={source} is a dataset of images, not a feature cache"
        if weights_source(made_from or "") != weights_source(info.path):
            return f"--reference_features={source} holds features of {made_from!r}, not of {info.path!r}"
        if cache.num_classes != info.num_classes:
            return f"--reference_features={source} has {cache.num_classes} classes, not {info.num_classes}"
        for split in (config.noisy_split, config.clean_split):
            if not cache.has_split(split):
                return f"--reference_features={source} lacks the split {split!r}"
        held, used = cache.splits[config.noisy_split].num_records, info.splits[config.noisy_split].num_records
        if held != used:
            return f"--reference_features={source} holds {held} {config.noisy_split} examples, the dataset {used}"
        return None

    def prepare(self, model, data, config, resumed=False) -> dict:
        kept = run_files.read_label_weights(config.model_dir) if resumed else None
        if kept is not None:
            (ids, weights), record = kept, {}
        else:
            ids, weights, record = self._fit(model.num_classes, config)
            run_files.write_label_weights(config.model_dir, ids, weights)
        if weights.shape[1] != model.num_classes:
            path = run_files.label_weights_path(config.model_dir)
            raise ValueError(f"{path} holds weights of {weights.shape[1]} classes, not {model.num_classes}")
        model.set_label_weights(ids, weights)
        return record

    @staticmethod
    def _fit(num_classes: int, config) -> tuple[list[str], np.ndarray, dict[str, Any]]:
        """Trains CleanNet on the reference features; (noisy-set ids, their label weights [N, d], the record)."""
        source = config.reference_features or config.feature_cache  # checked by `check` (or the trainer)
        cache = load_dataset_info(source)
        noisy, clean = read_split(cache, config.noisy_split), read_split(cache, config.clean_split)
        net = CleanNet(num_classes, NUM_REFERENCES, cache.feature_dim, name="cleannet")
        net.set_references(reference_set(noisy["features"], noisy["noisy_labels"], NUM_REFERENCES, config.seed))

        def pairs(split, verified_only):
            p = label_pairs(split, verified_only)
            return (split["features"][p["row"]], p["cls"], *((p["correct"],) if verified_only else ()))

        verified, unverified = pairs(clean, True), pairs(noisy, False)
        validation = None
        if config.eval_split and cache.has_split(config.eval_split):
            validation = pairs(read_split(cache, config.eval_split), True)
            validation = validation if len(validation[0]) else None
        record = train_cleannet(net, verified, unverified, validation, config.cleannet_steps, config.seed)
        run_files.save_cleannet(config.model_dir, net)
        weights = soft_weights(similarities(net, noisy["features"])).astype(np.float32)
        present = noisy["noisy_labels"] > 0
        record = {"cleannet_" + k: v for k, v in record.items()} | {
            "cleannet_verified_pairs": int(len(verified[0])),
            "mean_noisy_label_weight": float(weights[present].mean()),
        }
        return [i.decode("utf-8") for i in noisy["id"]], weights, record


def similarities(net: CleanNet, features: np.ndarray) -> np.ndarray:
    """[n, d]: each image's similarity to each class's embedding, in batches (bounded memory on large splits)."""
    return net.predict(features, batch_size=4096, verbose=0)


def reference_set(features: np.ndarray, noisy: np.ndarray, num_references: int, seed: int) -> np.ndarray:
    """Per class, k-means centres of the features of the examples noisily labelled with it: [d, K, F].

    A class with fewer examples than K repeats them; a class with none gets zeros.
    """
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(seed)
    d, f = noisy.shape[1], features.shape[1]
    references = np.zeros((d, num_references, f), np.float32)
    for c in range(d):
        members = features[noisy[:, c] > 0]
        if len(members) > MAX_KMEANS_POINTS:
            members = members[rng.choice(len(members), MAX_KMEANS_POINTS, replace=False)]
        if len(members) == 0:
            continue
        if len(members) <= num_references:
            references[c] = members[np.arange(num_references) % len(members)]
            continue
        kmeans = KMeans(num_references, n_init=3, random_state=seed).fit(members)
        references[c] = kmeans.cluster_centers_
    return references


def label_pairs(labels: dict[str, np.ndarray], verified_only: bool) -> dict[str, np.ndarray]:
    """The (image, noisily present class) pairs of a split; with `verified_only`, those whose class is verified.

    Returns:
        dict: `row` [P] (the image's index), `cls` [P], and with
        `verified_only` `correct` [P] (1.0 if the verified label agrees).
    """
    present = labels["noisy_labels"] > 0
    if verified_only:
        present &= labels["verified_mask"] > 0
    rows, classes = np.nonzero(present)
    pairs = {"row": rows, "cls": classes}
    if verified_only:
        pairs["correct"] = (labels["verified_labels"][rows, classes] > 0).astype(np.float32)
    return pairs


def train_cleannet(
    net: CleanNet,
    verified: tuple[np.ndarray, np.ndarray, np.ndarray],
    unverified: tuple[np.ndarray, np.ndarray],
    validation: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]],
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """Trains CleanNet (Lee et al.'s total loss) and keeps the weights of best validation accuracy.

    Args:
        net: `CleanNet` with its reference set.
        verified: (features [P, F], classes [P], correct [P]): pairs with a verification label.
        unverified: (features [Q, F], classes [Q]): pairs without one.
        validation: like `verified`, or None (the last weights are kept).
        steps: int. SGD steps.
        seed: int. The batches' order.

    Returns:
        dict: `steps`, `validation_accuracy` (of the kept weights, or None),
        `accepted_accuracy` (validation accuracy of accepting every label).
    """
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [max(1, steps // 2)], [LEARNING_RATE, LEARNING_RATE / 10]
    )
    optimizer = keras.optimizers.SGD(schedule, momentum=MOMENTUM)
    variables = net.trainable_variables
    optimizer.build(variables)
    rng = np.random.default_rng(seed)

    @tf.function
    def step(features, classes, correct, is_verified):
        with tf.GradientTape() as tape:
            loss = net.loss_on_pairs(features, classes, correct, is_verified, training=True)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def accuracy(pairs) -> float:
        features, classes, correct = pairs
        similarity = np.take_along_axis(similarities(net, features), classes[:, None], axis=1)[:, 0]
        return float(np.mean((similarity >= THRESHOLD) == (correct > 0)))

    every = max(1, steps // EVALUATIONS)
    best, best_weights = -1.0, None
    for i in range(1, steps + 1):
        a = rng.integers(0, len(verified[0]), BATCH)
        b = rng.integers(0, len(unverified[0]), BATCH)
        step(
            np.concatenate([verified[0][a], unverified[0][b]]),
            np.concatenate([verified[1][a], unverified[1][b]]),
            np.concatenate([verified[2][a], np.zeros(BATCH, np.float32)]),
            np.concatenate([np.ones(BATCH, np.float32), np.zeros(BATCH, np.float32)]),
        )
        if validation is not None and (i % every == 0 or i == steps):
            value = accuracy(validation)
            if value > best:
                best, best_weights = value, net.get_weights()
    if best_weights is not None:
        net.set_weights(best_weights)
    return {
        "steps": steps,
        "validation_accuracy": None if validation is None else best,
        "accepted_accuracy": None if validation is None else float(np.mean(validation[2])),
    }


def soft_weights(similarity: np.ndarray) -> np.ndarray:
    """CleanNet-wsoft's weights: max(0, cos)."""
    return np.maximum(similarity, 0.0)
