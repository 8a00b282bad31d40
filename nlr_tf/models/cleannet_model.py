"""Lee et al. 2018 (CleanNet): the noisy labels weighted by a learned verification similarity (CleanNet-wsoft).

CleanNet verifies a label c of an image x by comparing two embeddings of
the features of a network trained on the noisy labels: a query embedding of
x and a class embedding of c, built by attention over a reference set of
class-c features. Their cosine similarity is high for a correct label and
low for a wrong one; it learns from the verification labels the clean set
provides (its images' noisy labels, judged right or wrong), helped by an
auto-encoder on the query and an unsupervised loss on the noisy set. The
classifier then trains on the noisy labels, each weighted by max(0, cos):
CleanNet-wsoft, Hu et al. 2019 Table 4 row 3.

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

import os
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.models.classifier_model import SigmoidClassifier
from nlr_tf.models.example_table import ExampleTable

NUM_REFERENCES = 32
MAX_KMEANS_POINTS = 10000
EMBEDDING_DIM = 128
# Lee et al.'s losses and training (their code's defaults).
MARGIN = 0.1  # a wrong label is pushed below this similarity
NEGATIVE_WEIGHT = 5.0  # weight of a wrong label's loss
RECONSTRUCTION_WEIGHT = 0.1  # beta
UNSUPERVISED_WEIGHT = 0.1  # gamma
THRESHOLD = 0.1  # similarity at which a label counts as correct (pseudo-labels, validation accuracy)
WEIGHT_DECAY = 1e-4
LEARNING_RATE = 0.01
MOMENTUM = 0.9
BATCH = 32  # verified pairs per step, and as many unverified ones
EVALUATIONS = 10  # validation accuracy measured this many times over the steps

WEIGHTS_FILE = "cleannet_weights.npz"  # in the model dir: every noisy example's soft weights, read on resume
NET_FILE = "cleannet.keras"  # the trained CleanNet, for inspection and reuse


def cosine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Cosine similarity of matching rows, [..., E] x [..., E] -> [...], in [-1, 1]."""
    return tf.reduce_sum(tf.math.l2_normalize(a, axis=-1) * tf.math.l2_normalize(b, axis=-1), axis=-1)


def verification_loss(labels: tf.Tensor, similarity: tf.Tensor) -> tf.Tensor:
    """Lee et al.'s per-pair loss: 1 - cos for a correct label, w_neg max(0, cos - margin) for a wrong one."""
    labels = tf.cast(labels, similarity.dtype)
    return labels * (1.0 - similarity) + NEGATIVE_WEIGHT * (1.0 - labels) * tf.nn.relu(similarity - MARGIN)


@keras.saving.register_keras_serializable(package="nlr_tf")
class SetAttention(keras.layers.Layer):
    """Attention pooling over a set: `sum_k softmax_k(u_k . context) h_k`.

    Args:
        units: int. Width of the keys `u` and of the learned context vector.
        **kwargs: standard layer arguments.

    Call arguments:
        values: float [..., K, H]. The set's members `h`.
        keys: float [..., K, units]. What the context is matched with, `u`.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, values_shape, keys_shape=None):
        self.context = self.add_weight(name="context", shape=(self.units,), initializer="glorot_uniform")
        self.built = True

    def call(self, values, keys):
        scores = keras.ops.sum(keys * self.context, axis=-1, keepdims=True)  # [..., K, 1]
        attention = keras.ops.softmax(scores, axis=-2)
        return keras.ops.sum(attention * values, axis=-2)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="nlr_tf")
class CleanNet(keras.Model):
    """Query encoder and reference-set encoder: `cos(phi_q(x), phi_s(V_c))` verifies label c of image x.

    - Query encoder: features -> 256 -> `phi_q` (128), tanh; a decoder
      128 -> 256 -> F reconstructs the (normalized) features.
    - Reference-set encoder: each class's reference features V_c [K, F] ->
      512 -> 256 (`h`) -> 256 (`u`), tanh; attention pooling of `h` by `u`
      (`SetAttention`); -> `phi_s` (128), tanh.

    The reference set is a non-trainable weight [d, K, F], saved with the
    model; `set_references` assigns it.

    Args:
        num_classes, num_references, feature_dim: int. The reference set's shape.
        dropout_rate: float. Dropout after the reference encoder's first layer.
        **kwargs: standard model arguments.

    Reference:
        Lee et al., CleanNet: Transfer Learning for Scalable Image Classifier
        Training with Label Noise, CVPR 2018, Sec. 3.
    """

    def __init__(self, num_classes, num_references, feature_dim, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.num_references, self.feature_dim = (
            int(num_classes),
            int(num_references),
            int(feature_dim),
        )
        self.dropout_rate = float(dropout_rate)

        def dense(units, name):
            return keras.layers.Dense(
                units, activation="tanh", kernel_regularizer=keras.regularizers.L2(WEIGHT_DECAY / 2), name=name
            )

        self.query_hidden = dense(256, "query_hidden")
        self.query_embedding = dense(EMBEDDING_DIM, "query_embedding")
        self.decoder_hidden = dense(256, "decoder_hidden")
        self.decoder_output = dense(self.feature_dim, "decoder_output")
        self.reference_input = dense(512, "reference_input")
        self.reference_dropout = keras.layers.Dropout(self.dropout_rate)
        self.reference_hidden = dense(256, "reference_hidden")
        self.reference_keys = dense(256, "reference_keys")
        self.attention = SetAttention(256, name="attention")
        self.class_embedding = dense(EMBEDDING_DIM, "class_embedding")
        shape = (self.num_classes, self.num_references, self.feature_dim)
        self.references = self.add_weight(name="references", shape=shape, initializer="zeros", trainable=False)
        self.build(None)

    def build(self, input_shape):
        f = self.feature_dim
        for layer, width in (
            (self.query_hidden, f),
            (self.query_embedding, 256),
            (self.decoder_hidden, EMBEDDING_DIM),
            (self.decoder_output, 256),
            (self.reference_input, f),
            (self.reference_hidden, 512),
            (self.reference_keys, 256),
            (self.class_embedding, 256),
        ):
            layer.build((None, width))
        self.attention.build((None, 256), (None, 256))
        self.built = True

    def set_references(self, references: np.ndarray) -> None:
        references = np.asarray(references, np.float32)
        if references.shape != tuple(self.references.shape):
            raise ValueError(f"references must have shape {tuple(self.references.shape)}. Received: {references.shape}")
        self.references.assign(references)

    def encode_query(self, features, training=False):
        """(normalized features, phi_q, reconstruction)."""
        v = tf.math.l2_normalize(tf.cast(features, tf.float32), axis=-1)
        phi = self.query_embedding(self.query_hidden(v))
        return v, phi, self.decoder_output(self.decoder_hidden(phi))

    def class_embeddings(self, training=False):
        """phi_s of every class, [d, 128]."""
        v = tf.math.l2_normalize(tf.convert_to_tensor(self.references), axis=-1)
        h = self.reference_hidden(self.reference_dropout(self.reference_input(v), training=training))
        return self.class_embedding(self.attention(h, self.reference_keys(h)))

    def call(self, features, training=False):
        """Similarities of every image to every class, [B, d], in [-1, 1]."""
        _, phi_q, _ = self.encode_query(features, training)
        return cosine(phi_q[:, None, :], self.class_embeddings(training)[None, :, :])

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_references": self.num_references,
            "feature_dim": self.feature_dim,
            "dropout_rate": self.dropout_rate,
        }


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
            v, phi_q, reconstruction = net.encode_query(features, training=True)
            similarity = cosine(phi_q, tf.gather(net.class_embeddings(training=True), classes))
            pseudo = tf.stop_gradient(tf.cast(similarity >= THRESHOLD, tf.float32))
            per_pair = (
                is_verified * verification_loss(correct, similarity)
                + UNSUPERVISED_WEIGHT * (1.0 - is_verified) * verification_loss(pseudo, similarity)
                + RECONSTRUCTION_WEIGHT * tf.reduce_sum(tf.square(v - reconstruction), axis=-1)
            )
            loss = tf.reduce_mean(per_pair) + tf.add_n(net.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    def accuracy(pairs) -> float:
        features, classes, correct = pairs
        similarity = np.concatenate(
            [
                np.take_along_axis(net(features[i : i + 4096]).numpy(), classes[i : i + 4096, None], axis=1)[:, 0]
                for i in range(0, len(features), 4096)
            ]
        )
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


@keras.saving.register_keras_serializable(package="nlr_tf")
class CleanNetModel(SigmoidClassifier):
    """The sigmoid classifier, its noisy labels weighted by CleanNet's verification similarity (CleanNet-wsoft).

    Before the first step (`fit_before_training`), CleanNet trains on the
    reference features (see the module docstring) and gives every noisy
    label of every noisy-set example its weight max(0, cos); the weights are
    kept in the model dir (`cleannet_weights.npz`) for a resumed run, with
    the trained CleanNet (`cleannet.keras`). Training fits the classifier to
    the noisy labels, each entry's binary cross-entropy times its weight:
    multi-label, a noisily present class's own weight (absent ones 1);
    single-label, the weight of the example's noisy class on all of its
    entries. Clean-set examples, if the batch mix has any, count fully.

    Outputs: `scores` and `logits`, [B, d].

    Reference:
        Lee et al., CleanNet: Transfer Learning for Scalable Image Classifier
        Training with Label Noise, CVPR 2018 (w_soft, Sec. 3.3).
    """

    family = "cleannet"
    needs_ids = True
    training_options = ("reference_features", "cleannet_steps")

    def __init__(self, backbone, num_classes, multi_label=True, **kwargs):
        super().__init__(backbone, num_classes, **kwargs)
        self.multi_label = bool(multi_label)
        self.label_weights = None  # an `ExampleTable` (id -> [d] weights), set by `fit_before_training`

    @classmethod
    def config_error(cls, config, info):
        source = config.reference_features or config.feature_cache
        if not source:
            return (
                "--method=cleannet embeds the features of a network trained on the noisy labels: pass "
                "--reference_features (a feature cache made by nlr-extract-features) or --feature_cache"
            )
        if not info.has_split(config.clean_split):
            return f"--method=cleannet learns from the verification labels of split {config.clean_split!r}, absent"
        from nlr_tf.data.parsing import label_arrays

        if not len(label_pairs(label_arrays(info.split_files(config.clean_split), info.num_classes), True)["row"]):
            return f"split {config.clean_split!r} verifies no noisy label: CleanNet has nothing to learn from"
        if not config.reference_features:
            return None  # the run's own feature cache: the trainer checks (or builds) it
        from nlr_tf.data.feature_cache import weights_source
        from nlr_tf.data.schema import DatasetError, load_dataset_info

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

    def fit_before_training(self, data, config, resumed=False) -> dict:
        path = os.path.join(config.model_dir, WEIGHTS_FILE)
        if resumed and os.path.isfile(path):
            with np.load(path) as f:
                ids, weights, record = f["ids"].tolist(), f["weights"], {}
        else:
            ids, weights, record = self._fit_cleannet(config)
            np.savez(path + ".tmp.npz", ids=np.array(ids, dtype=object).astype(str), weights=weights)
            os.replace(path + ".tmp.npz", path)
        if weights.shape[1] != self.num_classes:
            raise ValueError(f"{path} holds weights of {weights.shape[1]} classes, not {self.num_classes}")
        self.label_weights = ExampleTable([str(i) for i in ids], weights, default=1.0)
        return record

    def _fit_cleannet(self, config) -> tuple[list[str], np.ndarray, dict]:
        from nlr_tf.data.feature_cache import read_split
        from nlr_tf.data.schema import load_dataset_info

        source = config.reference_features or config.feature_cache  # checked by `config_error` (or the trainer)
        cache = load_dataset_info(source)
        noisy, clean = read_split(cache, config.noisy_split), read_split(cache, config.clean_split)
        net = CleanNet(self.num_classes, NUM_REFERENCES, cache.feature_dim, name="cleannet")
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
        net.save(os.path.join(config.model_dir, NET_FILE))
        similarity = np.concatenate(
            [net(noisy["features"][i : i + 4096]).numpy() for i in range(0, len(noisy["id"]), 4096)]
        )
        weights = soft_weights(similarity).astype(np.float32)
        present = noisy["noisy_labels"] > 0
        record = {"cleannet_" + k: v for k, v in record.items()} | {
            "cleannet_verified_pairs": int(len(verified[0])),
            "mean_noisy_label_weight": float(weights[present].mean()),
        }
        return [i.decode("utf-8") for i in noisy["id"]], weights, record

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
