"""The backbones' names and default input sides (no TensorFlow: flag definitions read them)."""

BACKBONES = ("inception_v3", "resnet50", "small_cnn", "small_cnn_wide")
# The input resolution each backbone is usually trained at.
DEFAULT_IMAGE_SIZE = {"inception_v3": 299, "resnet50": 224, "small_cnn": 32, "small_cnn_wide": 32}
# The small CNNs' width: filters of the first stage (the features have four times as many).
SMALL_CNN_WIDTH = {"small_cnn": 16, "small_cnn_wide": 32}
