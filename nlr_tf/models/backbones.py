"""Backbones: image -> pooled features.

`inception_v3` and `resnet50` come from `keras.applications` (global average
pooled, no top); `small_cnn` is a small convnet for the built-in benchmark
and the tests. Weights: "none" (random), "imagenet" (from the Keras cache,
never downloaded here: an absent file is a clear error), or the path of a
Keras `.h5` weights file (for `small_cnn`: one written by
`nlr_tf.training.pretext`) (Keras-2 style files such as
`inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5` load through the
legacy HDF5 path; `.weights.h5` files through the Keras 3 one).

A frozen backbone (`trainable=False`) keeps its BatchNorm layers in
inference mode (Keras 3 semantics), so its features do not drift and can be
cached.
"""

import os

import keras

from nlr_tf.data.image_sizes import BACKBONES, DEFAULT_IMAGE_SIZE
from nlr_tf.models.image_preprocessing import BackbonePreprocessing

MIN_IMAGE_SIZE = {"inception_v3": 75, "resnet50": 32, "small_cnn": 8}
FEATURE_DIM = {"inception_v3": 2048, "resnet50": 2048}
_IMAGENET_NOTOP_FILE = {
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "resnet50": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def imagenet_weights_path(name: str) -> str:
    """Where Keras keeps the ImageNet (no top) weights of backbone `name`."""
    cache = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(cache, "models", _IMAGENET_NOTOP_FILE[name])


def resolve_weights(name: str, weights: str):
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        if name not in _IMAGENET_NOTOP_FILE:
            raise ValueError(f"{name} has no ImageNet weights; use none or a .weights.h5 file it saved")
        path = imagenet_weights_path(name)
        if not os.path.isfile(path):
            raise ValueError(
                f"ImageNet weights for {name} are not in the Keras cache ({path}) and are never downloaded at run "
                f"time; copy {_IMAGENET_NOTOP_FILE[name]} there or pass --backbone_weights=/path/to/it"
            )
        return path
    if not os.path.isfile(weights):
        raise ValueError(f"backbone weights file not found: {weights!r}")
    if not weights.endswith((".h5", ".hdf5")):
        raise ValueError(f"backbone weights must be a Keras .h5 file. Received: weights={weights}")
    return weights


def small_cnn(image_size: int, width: int = 16, name: str = "small_cnn") -> keras.Model:
    """Three stages of two conv-BN-ReLU blocks, max pooling between stages, then global average pooling.

    Takes images already scaled to [0, 1]. The default width (16, 32 and 64
    filters; 64-d features) learns the built-in benchmark's digits, and is
    small enough that every row of its reproduction trains to a plateau on
    two CPU cores (width 32 trains at about a quarter of the speed).
    """
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = inputs
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(2):
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}_{block}")(x)
            # Synchronized: batch statistics over the global batch, so moving
            # averages agree across replicas and workers. Momentum 0.9, not
            # Keras' 0.99: after a few hundred steps the 0.99 averages still
            # lag the fast-changing weights, and inference-mode scores drift
            # per class (measured on digits_mosaic GT after 400 steps: test
            # APall 0.64 with 0.99 against 0.98 with 0.9 and 0.998 with batch
            # statistics; mAP 0.955 / 0.997 / 0.998).
            x = keras.layers.BatchNormalization(synchronized=True, momentum=0.9, name=f"bn{stage}_{block}")(x)
            x = keras.layers.ReLU(name=f"relu{stage}_{block}")(x)
        if stage < 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name)


def build_backbone(name: str, weights: str = "none", image_size: int = 0, trainable: bool = True) -> keras.Model:
    """Builds a backbone mapping RGB images [B, S, S, 3] in [0, 255] to features [B, F].

    Its first layer applies the backbone's own input scaling
    (`BackbonePreprocessing`).

    Args:
        name: str. One of `BACKBONES`.
        weights: str. "none", "imagenet" or a path to a Keras `.h5` file.
            Defaults to "none".
        image_size: int. Input side; 0 takes the backbone's default.
        trainable: bool. False freezes it (BatchNorm in inference mode).

    Returns:
        A functional `keras.Model` named "backbone".
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone; choose one of {', '.join(BACKBONES)}. Received: backbone={name}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[name]
    if image_size < MIN_IMAGE_SIZE[name]:
        raise ValueError(f"{name} needs images of at least {MIN_IMAGE_SIZE[name]} pixels. Received: {image_size}")
    path = resolve_weights(name, weights)
    if name == "small_cnn":
        base = small_cnn(image_size)
        if path is not None:
            base.load_weights(path)
    else:
        app = {"inception_v3": keras.applications.InceptionV3, "resnet50": keras.applications.ResNet50}[name]
        base = app(include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling="avg")
        if path is not None:
            base.load_weights(path)
    images = keras.Input((image_size, image_size, 3), name="image")
    model = keras.Model(images, base(BackbonePreprocessing(name, name="preprocessing")(images)), name="backbone")
    model.trainable = trainable
    return model
