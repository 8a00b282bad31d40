"""CleanNet (Lee et al. 2018): the network that verifies a label by comparing two embeddings, and its losses.

A query embedding of an image's features and a class embedding of the
label's reference set (attention over the class's reference features):
their cosine similarity is high for a correct label and low for a wrong
one. `CleanNet.loss_on_pairs` is Lee et al.'s total loss (verification,
pseudo-labelled unverified pairs, reconstruction, weight decay); the
cleannet training task (`nlr_tf.training.tasks.cleannet`) fits it.
"""

import keras
import numpy as np
import tensorflow as tf

from nlr_tf.layers.set_attention import SetAttention

EMBEDDING_DIM = 128
# Lee et al.'s losses (their code's defaults).
MARGIN = 0.1  # a wrong label is pushed below this similarity
NEGATIVE_WEIGHT = 5.0  # weight of a wrong label's loss
RECONSTRUCTION_WEIGHT = 0.1  # beta
UNSUPERVISED_WEIGHT = 0.1  # gamma
THRESHOLD = 0.1  # similarity at which a label counts as correct (pseudo-labels, validation accuracy)
WEIGHT_DECAY = 1e-4


def cosine(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Cosine similarity of matching rows, [..., E] x [..., E] -> [...], in [-1, 1]."""
    return tf.reduce_sum(tf.math.l2_normalize(a, axis=-1) * tf.math.l2_normalize(b, axis=-1), axis=-1)


def verification_loss(labels: tf.Tensor, similarity: tf.Tensor) -> tf.Tensor:
    """Lee et al.'s per-pair loss: 1 - cos for a correct label, w_neg max(0, cos - margin) for a wrong one."""
    labels = tf.cast(labels, similarity.dtype)
    return labels * (1.0 - similarity) + NEGATIVE_WEIGHT * (1.0 - labels) * tf.nn.relu(similarity - MARGIN)


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

    def loss_on_pairs(self, features, classes, correct, is_verified, training=True):
        """Lee et al.'s total loss on a batch of (image, label) pairs, weight decay included.

        Args:
            features: float [P, F]. The pairs' images' features.
            classes: int [P]. The pairs' (noisy) labels.
            correct: float [P]. 1.0 where a verified label is right (any
                value where the pair is not verified).
            is_verified: float [P]. 1.0 for a pair with a verification
                label; the others learn from pseudo-labels (similarity >=
                `THRESHOLD`), weighted by `UNSUPERVISED_WEIGHT`.
        """
        v, phi_q, reconstruction = self.encode_query(features, training=training)
        similarity = cosine(phi_q, tf.gather(self.class_embeddings(training=training), classes))
        pseudo = tf.stop_gradient(tf.cast(similarity >= THRESHOLD, tf.float32))
        per_pair = (
            is_verified * verification_loss(correct, similarity)
            + UNSUPERVISED_WEIGHT * (1.0 - is_verified) * verification_loss(pseudo, similarity)
            + RECONSTRUCTION_WEIGHT * tf.reduce_sum(tf.square(v - reconstruction), axis=-1)
        )
        return tf.reduce_mean(per_pair) + tf.add_n(self.losses)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_references": self.num_references,
            "feature_dim": self.feature_dim,
            "dropout_rate": self.dropout_rate,
        }
