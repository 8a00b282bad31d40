"""Self-supervised pretraining of a backbone: rotation prediction (Gidaris et al. 2018).

Both papers start from ImageNet weights. Where none fit the images (or, as
in the built-in benchmark, none may be used), a backbone can first learn a
task that needs no class labels: each training image is shown at 0, 90, 180
and 270 degrees and the network predicts which. The backbone's weights are
then written as a Keras `.weights.h5` file that `--backbone_weights` loads
like an ImageNet file.

Only images are read, from one split (the training images); labels, and
the evaluation splits, are never touched.
"""

import dataclasses
import os

import keras
import tensorflow as tf

from nlr_tf.backbones.networks import build_backbone
from nlr_tf.data import files, pipeline
from nlr_tf.data.input_config import InputConfig
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.training import model_dir as run_files

ROTATIONS = 4
WEIGHTS_FILE = run_files.BACKBONE_WEIGHTS_FILE
SUMMARY_FILE = "pretext.json"
_CHECK_BATCHES = 20


@dataclasses.dataclass
class RotationConfig:
    """A rotation-prediction pretraining run.

    Args:
        dataset: str. Dataset dir.
        output_dir: str. Where `backbone.weights.h5` and `pretext.json` go.
        split: str. The split whose images are read (never val or test).
        backbone: str. Backbone name.
        image_size: int. Input side; 0 takes the backbone's default.
        batch_size: int. Images per step; each is shown at all four angles.
        steps: int. Training steps.
        learning_rate: float. Adam's rate.
        seed: int. Shuffling and initialization seed.
    """

    dataset: str
    output_dir: str
    split: str = "noisy"
    backbone: str = "small_cnn"
    image_size: int = 0
    batch_size: int = 60
    steps: int = 2000
    learning_rate: float = 1e-3
    seed: int = 0


def rotated_batches(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Every image of a [B, S, S, C] batch at the four angles, and which angle (0..3) each copy shows."""
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"rotation prediction needs square images. Received shape: {images.shape}")
    rotated = tf.concat([tf.image.rot90(images, k) for k in range(ROTATIONS)], axis=0)
    batch = tf.shape(images)[0]
    angles = tf.repeat(tf.range(ROTATIONS), batch)
    return rotated, angles


def pretrain_rotation(config: RotationConfig) -> dict:
    """Trains backbone + a 4-way linear layer to predict each image's rotation; writes the backbone's weights.

    Returns:
        The run's summary (also written to `pretext.json`): the weights file,
        and the rotation accuracy and loss in inference mode on a few
        batches of the training images.
    """
    info = load_dataset_info(config.dataset)
    if config.split in ("val", "test"):
        raise ValueError(f"pretraining reads training images only. Received: split={config.split!r}")
    if not info.has_split(config.split):
        raise ValueError(f"split {config.split!r} is absent from dataset {config.dataset!r}")
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive. Received: {config.steps}, {config.batch_size}")
    keras.utils.set_random_seed(config.seed)
    images = pipeline.make_split_dataset(
        info,
        config.split,
        config.batch_size,
        input_config=InputConfig(backbone=config.backbone, image_size=config.image_size or None, seed=config.seed),
        training=True,
        drop_remainder=True,
    ).map(lambda batch: rotated_batches(batch["image"]), num_parallel_calls=tf.data.AUTOTUNE)

    backbone = build_backbone(config.backbone, image_size=config.image_size)
    model = keras.Sequential([backbone, keras.layers.Dense(ROTATIONS, name="rotation")], name="rotation_pretext")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    # The pipeline shuffles (training=True); Keras' own shuffle does not apply to a dataset.
    model.fit(images, epochs=1, steps_per_epoch=config.steps, shuffle=False, verbose=0)
    # Inference-mode rotation accuracy on training images (the pretext task has no held-out split).
    measured = model.evaluate(images.take(_CHECK_BATCHES), verbose=0, return_dict=True)
    files.makedirs(config.output_dir)
    # The backbone's own network (without its input scaling layer, which has no weights): the layout
    # `build_backbone(..., weights=path)` loads.
    weights_path = os.path.join(config.output_dir, WEIGHTS_FILE)
    backbone.get_layer(config.backbone).save_weights(weights_path)
    summary = {
        "task": "rotation",
        "weights": weights_path,
        "rotation_accuracy": measured["accuracy"],
        "loss": measured["loss"],
        "config": dataclasses.asdict(config),
    }
    files.write_json(os.path.join(config.output_dir, SUMMARY_FILE), summary)
    return summary
