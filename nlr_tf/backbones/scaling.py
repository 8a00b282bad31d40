"""The backbone's input scaling: a function, and the same as the model's first layer."""

import keras
import tensorflow as tf

from nlr_tf.backbones.sizes import check_backbone

# ImageNet channel means in BGR order, as in keras.applications' "caffe" mode.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def preprocess(images: tf.Tensor, backbone: str) -> tf.Tensor:
    """Scales float pixel values in [0, 255] as `backbone` expects.

    - `inception_v3`: to [-1, 1] (keras.applications "tf" mode).
    - `resnet50`: RGB -> BGR, then ImageNet mean subtraction per channel
      (keras.applications "caffe" mode).
    - `small_cnn`, `small_cnn_wide`: to [0, 1].

    Equals `keras.applications.<backbone>.preprocess_input`. Models apply it
    as their first layer (`BackbonePreprocessing` below).

    Args:
        images: float32 tensor [..., 3], RGB, values in [0, 255].
        backbone: str. One of `BACKBONES`.

    Returns:
        float32 tensor of the same shape.

    Raises:
        ValueError: an unknown backbone.
    """
    check_backbone(backbone)
    images = tf.convert_to_tensor(images, tf.float32)
    if backbone == "resnet50":
        return tf.reverse(images, axis=[-1]) - tf.constant(_CAFFE_BGR_MEAN, tf.float32)
    if backbone == "inception_v3":
        return images / 127.5 - 1.0
    return images / 255.0


@keras.saving.register_keras_serializable(package="nlr_tf")
class BackbonePreprocessing(keras.layers.Layer):
    """Scales RGB pixels in [0, 255] as the backbone was trained to see them.

    `inception_v3`: to [-1, 1]; `resnet50`: RGB -> BGR and ImageNet mean
    subtraction; `small_cnn`: to [0, 1] -- exactly
    `keras.applications.<backbone>.preprocess_input`. Inside the model, the
    scaling runs on the accelerator (not in the CPU-bound input pipeline)
    and travels with the model into every SavedModel, so training, eval and
    serving cannot disagree about it.

    Args:
        backbone: str. One of "inception_v3", "resnet50", "small_cnn".
        **kwargs: standard layer arguments.
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        check_backbone(backbone)
        self.backbone = backbone

    def call(self, images):
        return preprocess(images, self.backbone)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"backbone": self.backbone})
        return config
