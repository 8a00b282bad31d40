"""A trained model as a SavedModel that TF Serving loads.

Signatures:

- `serving_default`: `image_bytes` (tf.string [None], encoded JPEG or PNG)
  -> `scores` [None, d], `top_k_indices` [None, k] (int32) and
  `top_k_names` [None, k] (tf.string). Decoding and resizing happen in the
  graph, exactly as in the input pipeline; the backbone's own scaling is
  the model's first layer. With per-class decision thresholds
  (`nlr_tf.evaluation.thresholds`), also `labels` [None, d] (int32, 1
  where a score is at least its class's threshold) and `label_names`
  [None, d] (tf.string: the class name where predicted, else ""). Bytes that are neither JPEG nor PNG fail the
  request with an error that says so, never with scores.
- `serve_images`: `images` (float32 [None, S, S, 3], RGB in [0, 255]) ->
  the same outputs.

Built with `keras.export.ExportArchive`. `write_export` writes the folder
whole or not at all, on any TensorFlow filesystem, with the thresholds'
`thresholds.json` beside the SavedModel.
"""

import os
from typing import Any, Optional

import keras
import tensorflow as tf

from nlr_tf.data import files, preprocessing
from nlr_tf.data.output_dir import atomic_output_dir

THRESHOLDS_FILE = "thresholds.json"


def _is_jpeg_or_png(data: tf.Tensor) -> tf.Tensor:
    jpeg = tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff"
    png = tf.strings.substr(data, 0, 8) == b"\x89PNG\r\n\x1a\n"
    return tf.logical_or(jpeg, png)


def export_saved_model(
    model: keras.Model, export_dir: str, *, image_size: int, class_names, top_k: int = 5, thresholds=None
) -> None:
    """Writes `model` (images in [0, 255] -> scores) as a SavedModel at `export_dir`.

    Args:
        model: `keras.Model`. A trained method model.
        export_dir: str. Output folder.
        image_size: int. The model's input side.
        class_names: list of str. Names of the d classes, in order.
        top_k: int. Number of top classes returned. Defaults to 5.
        thresholds: float [d] or None. Per-class decision thresholds (a class
            is predicted where its score is >= its threshold; inf: never):
            adds the `labels` and `label_names` outputs.
    """
    k = min(top_k, len(class_names))
    names = tf.constant(list(class_names))
    if thresholds is not None:
        if len(thresholds) != len(class_names):
            raise ValueError(f"{len(thresholds)} thresholds for {len(class_names)} classes")
        cut = tf.constant(thresholds, tf.float32)

    def outputs(images):
        scores = model(images, training=False)["scores"]
        top = tf.math.top_k(scores, k=k)
        out = {"scores": scores, "top_k_indices": top.indices, "top_k_names": tf.gather(names, top.indices)}
        if thresholds is not None:
            on = tf.cast(scores, tf.float32) >= cut[None, :]
            out["labels"] = tf.cast(on, tf.int32)
            out["label_names"] = tf.where(on, tf.broadcast_to(names, tf.shape(on)), tf.constant(""))
        return out

    def decode(data):
        check = tf.debugging.Assert(_is_jpeg_or_png(data), ["image_bytes holds an image that is neither JPEG nor PNG"])
        with tf.control_dependencies([check]):
            image = preprocessing.decode_image(data, dtype=tf.uint8)
        return preprocessing.resize(image, (image_size, image_size))

    def serve_bytes(image_bytes):
        images = tf.map_fn(
            decode, image_bytes, fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.float32)
        )
        return outputs(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default", fn=serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
    )
    archive.add_endpoint(
        name="serve_images",
        fn=outputs,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="images")],
    )
    archive.write_out(export_dir, verbose=False)  # the binary says what it wrote, without every tensor spec


def write_export(
    model: keras.Model,
    export_dir: str,
    *,
    image_size: int,
    class_names,
    top_k: int = 5,
    thresholds=None,
    thresholds_json: Optional[dict[str, Any]] = None,
    overwrite: bool = False,
) -> None:
    """`export_saved_model` into a folder that appears only when complete (`output_dir.atomic_output_dir`).

    An existing export is replaced (with `overwrite`) only once the new one
    is written, its thresholds file included; off the local disk
    `saved_model.pb`, what a loader looks for, is moved in last.

    Args:
        thresholds_json: dict or None. Written as `thresholds.json` (the
            thresholds' description, `Thresholds.as_dict`).

    Raises:
        output_dir.OutputDirError: `export_dir` exists and `overwrite` is False.
    """
    with atomic_output_dir(export_dir, overwrite, last=(THRESHOLDS_FILE, "saved_model.pb")) as tmp:
        export_saved_model(
            model, tmp, image_size=image_size, class_names=class_names, top_k=top_k, thresholds=thresholds
        )
        if thresholds_json is not None:
            files.write_json(os.path.join(tmp, THRESHOLDS_FILE), thresholds_json)
