"""Converters from source datasets to the nlr_tf TFRecord schema.

Nothing here imports TensorFlow at module import time: converters run image
work in worker threads and only the writer and the `tfds` source need TF.
"""

# Not a package version (the distribution has one, `nlr_tf.__version__`): the revision of what the converters
# write, recorded in each dataset.json as `converter_version` and bumped when a converter's output changes, so a
# dataset made by another revision is rebuilt rather than reused. 0.2: digits_mosaic's nested scan pools.
CONVERTER_VERSION = "0.2.0"
