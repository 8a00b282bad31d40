"""The backbone's input scaling as the first layer of the model."""

import keras

from nlr_tf.data import preprocessing


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
        preprocessing.check_backbone(backbone)
        self.backbone = backbone

    def call(self, images):
        return preprocessing.preprocess(images, self.backbone)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"backbone": self.backbone})
        return config
