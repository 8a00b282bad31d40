"""Converters from source datasets to the nlr_tf TFRecord schema.

Converters read their source files and images through `tf.io.gfile` (any
filesystem), run image work in worker threads (or Beam workers:
`beam_writer`), and hand records to the writer.
"""

# Not a package version (the distribution has one, `nlr_tf.__version__`): the revision of what the converters
# write, recorded in each dataset.json as `converter_version` and bumped when a converter's output changes, so a
# dataset made by another revision is rebuilt rather than reused. 0.2: digits_mosaic's nested scan pools.
CONVERTER_VERSION = "0.2.0"
