"""What `nlr-clean-labels` checks before it writes anything.

The dataset of images whose records it copies (a feature cache's source
must hold the same records), the model against the dataset (classes,
feature size), and a feature cache's features against the model's own.
"""

from typing import Any

import numpy as np

from nlr_tf.data import pipeline, schema
from nlr_tf.data.input_config import InputConfig
from nlr_tf.evaluation import evaluator
from nlr_tf.evaluation.cleaned_output import CleaningError

# Images whose scores are recomputed from pixels to prove that a feature
# cache holds this model's backbone features.
_CACHE_CHECK_IMAGES = 16
_CACHE_CHECK_TOLERANCE = 1e-3


def images_dataset(info: schema.DatasetInfo, split: str) -> schema.DatasetInfo:
    """The dataset of images whose records are copied: `info`, or a cache's source with the same records."""
    images, why = evaluator.images_dataset(info)
    if images is None:
        raise CleaningError(f"{info.path!r} is a feature cache whose dataset of images cannot be read: {why}")
    images.split_files(split)
    if images.splits[split].num_records != info.splits[split].num_records:
        raise CleaningError(
            f"feature cache {info.path!r} holds {info.splits[split].num_records} records of split {split!r} but its "
            f"dataset {images.path!r} holds {images.splits[split].num_records}: rebuild the cache"
        )
    return images


def check_model_fits(model, run_config: dict[str, Any], info: schema.DatasetInfo) -> None:
    if info.num_classes != model.num_classes:
        raise CleaningError(
            f"the model has {model.num_classes} classes but dataset {info.path!r} has {info.num_classes}"
        )
    trained_on = run_config.get("class_names")
    if trained_on and list(trained_on) != info.class_names:
        raise CleaningError(
            f"the model was trained on the classes {trained_on} but dataset {info.path!r} has {info.class_names}"
        )
    feature_dim = int(model.backbone.output.shape[-1])
    if info.feature_dim and info.feature_dim != feature_dim:
        raise CleaningError(
            f"feature cache {info.path!r} holds {info.feature_dim}-d features but the model's backbone "
            f"gives {feature_dim}-d ones"
        )


def check_cache_scores(model, images: schema.DatasetInfo, split: str, predictions, *, backbone: str, image_size: int):
    """Proves a feature cache holds this model's features: scores from pixels agree."""
    ds = pipeline.make_split_dataset(
        images,
        split,
        _CACHE_CHECK_IMAGES,
        input_config=InputConfig(backbone=backbone, image_size=image_size or None),
        training=False,
        with_ids=True,
    )
    batch = next(iter(ds))
    index = {image_id: i for i, image_id in enumerate(predictions["id"])}
    rows = [index.get(i.decode("utf-8"), -1) for i in batch["id"].numpy()]
    if min(rows) < 0:
        raise CleaningError(f"the feature cache lacks images of split {split!r} of {images.path!r}: rebuild the cache")
    from_pixels = model(batch["image"], training=False)["scores"].numpy()
    gap = float(np.max(np.abs(from_pixels - predictions["scores"][rows])))
    if gap > _CACHE_CHECK_TOLERANCE:
        raise CleaningError(
            f"the feature cache's features are not this model's backbone features (scores differ by up to {gap:.3g} "
            f"from scores computed on the images of {images.path!r}): pass the dataset of images"
        )
