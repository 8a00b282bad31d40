"""The backbones' names and default input sides (no TensorFlow: flag definitions read them)."""

BACKBONES = ("inception_v3", "resnet50", "small_cnn")
# The input resolution each backbone is usually trained at.
DEFAULT_IMAGE_SIZE = {"inception_v3": 299, "resnet50": 224, "small_cnn": 32}
