"""Data: the TFRecord schema, dataset metadata and the tf.data input pipeline.

`schema` imports no TensorFlow so that converters can use it cheaply;
`parsing`, `preprocessing` and `pipeline` do.
"""
