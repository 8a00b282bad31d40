"""An evaluation's TensorBoard events: scalars, PR curves (the `pr_curves` plugin's format) and examples."""

import os
from typing import Optional

import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import metadata as pr_metadata

from nlr_tf.data import files

# Event files of an evaluation carry this suffix, so that evaluating again
# replaces them and leaves any other event file in the folder alone.
EVENTS_SUFFIX = ".nlr-eval"


def write_tensorboard(
    logdir: str,
    step: int,
    scalars: dict[str, float],
    curves: dict[str, np.ndarray],
    examples: Optional[np.ndarray] = None,
) -> None:
    """Writes an evaluation's scalars, PR curves and examples image at `step`.

    PR curves are tensor summaries [6, T] tagged `pr_curves/NAME` with the
    `pr_curves` plugin's metadata, which TensorBoard's PR-curve dashboard
    reads. The event files of an earlier evaluation into `logdir` are
    replaced.
    """
    files.makedirs(logdir)
    for old in files.glob(os.path.join(logdir, f"events.out.tfevents.*{EVENTS_SUFFIX}")):
        files.remove(old)
    writer = tf.summary.create_file_writer(logdir, filename_suffix=EVENTS_SUFFIX)
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            if value is not None and np.isfinite(value):
                tf.summary.scalar(tag, value)
        for name, data in curves.items():
            meta = pr_metadata.create_summary_metadata(
                display_name=name,
                description="Class-agnostic precision-recall over the verified entries "
                + ("of all classes" if name == "all" else f"of the classes of category {name!r}"),
                num_thresholds=int(data.shape[1]),
            )
            tf.summary.write(f"pr_curves/{name}", tf.constant(data, tf.float32), metadata=meta.SerializeToString())
        if examples is not None:
            tf.summary.image("examples", examples[None], max_outputs=1)
    writer.close()
