"""Converters from source datasets to the nlr_tf TFRecord schema.

Nothing here imports TensorFlow at module import time: converters run image
work in worker threads and only the writer and the `tfds` source need TF.
"""

__version__ = "0.2.0"  # 0.2: digits_mosaic builds clean sets from nested scan pools
