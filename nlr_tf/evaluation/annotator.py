"""A finished run as an automatic annotator: its scores on image arrays, with its class names.

Hu et al. 2019 compiled COCO's noisy labels by running an ImageNet
Inception V3 over every whole image and keeping its top-8 predictions that
name a COCO class. `RunAnnotator` plays that part for a converter that makes
its own images (digits_mosaic's transfer variant): it loads an `nlr-train`
run and scores arrays exactly as the input pipeline would show them to the
model (grayscale expanded to RGB, resized bilinearly to the run's input
side, the model's own pixel scaling).
"""

import numpy as np
import tensorflow as tf

from nlr_tf.backbones import sizes
from nlr_tf.data import preprocessing
from nlr_tf.data.schema import load_dataset_info
from nlr_tf.training.model_dir import load_trained_model


class RunAnnotator:
    """Scores of an `nlr-train` run on image arrays.

    Args:
        model_dir: str. A finished run (its `model.keras` and `config.json`).
        batch_size: int. Images per forward pass.
        dataset: str. The dataset whose label map names the run's classes
            (default: the one it trained on, from its config).

    Attributes:
        class_names: list of str. The run's classes, in score order (from the
            label map of the dataset it trained on).
        description: dict. What the annotator is, for a dataset's provenance.
    """

    def __init__(self, model_dir: str, batch_size: int = 256, dataset: str = ""):
        self.model, config = load_trained_model(model_dir)
        info = load_dataset_info(dataset or config["dataset"])
        self.class_names = [c.name for c in info.classes]
        if len(self.class_names) != self.model.num_classes:
            raise ValueError(
                f"{model_dir}: the model has {self.model.num_classes} classes but its dataset {config['dataset']!r} "
                f"lists {len(self.class_names)}"
            )
        self.image_size = sizes.image_size_hw(config.get("image_size") or None, config["backbone"])
        self.batch_size = batch_size
        self.description = {
            "model_dir": model_dir,
            "method": config.get("method"),
            "backbone": config["backbone"],
            "image_size": list(self.image_size),
            "dataset": dataset or config["dataset"],
            "num_classes": len(self.class_names),
        }

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Scores [N, C] of uint8 images [N, H, W] (grayscale) or [N, H, W, 3]."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W] or [N, H, W, 3]. Received shape: {images.shape}")
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = tf.convert_to_tensor(images[start : start + self.batch_size], tf.float32)
            batch = preprocessing.resize(batch, self.image_size)
            out.append(np.asarray(self.model(batch, training=False)["scores"]))
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)
