"""Example predictions (Hu Fig. 3, Veit Fig. 7): test images with their top-5, marked right, wrong or unverified.

Read from `prediction.Evaluated`: the top classes of each image, judged
batch by batch as the model ran, and the classes present of the shown images.
"""

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from nlr_tf.data import schema
from nlr_tf.data.schema import DatasetInfo
from nlr_tf.evaluation import plotting
from nlr_tf.models.prediction import TOP_K, Evaluated


def top_k_judged(p: Evaluated, index: int, k: int = TOP_K) -> list[tuple[int, float, Optional[bool]]]:
    """Top-k predictions of image `index` as (class, score, right?).

    Right or wrong against the truth where the image has it, else against
    its verified labels; None for an unverified class. At most the top
    classes `p` kept per image.
    """
    judged = zip(p.top_class[index, :k], p.top_score[index, :k], p.top_right[index, :k])
    return [(int(c), float(score), None if right < 0 else bool(right)) for c, score, right in judged]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _present(p: Evaluated, index: int) -> tuple[str, np.ndarray]:
    if p.has_true[index]:
        return "truth", p.true_classes[p.true_rows == index]
    entries = p.entries
    return "verified", np.compress((entries.rows == index) & entries.labels, entries.classes)


def first_images(info: DatasetInfo, split: str, count: int) -> list[tuple[str, np.ndarray]]:
    """The ids and decoded RGB images (uint8 [H, W, 3]) of the first `count` records of `split`, in file order."""
    spec = {
        schema.IMAGE_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    out = []
    for record in tf.data.TFRecordDataset(info.split_files(split)).take(count):
        example = tf.io.parse_single_example(record, spec)
        image = tf.io.decode_image(example[schema.IMAGE_ENCODED], channels=3, expand_animations=False)
        out.append((example[schema.IMAGE_ID].numpy().decode("utf-8"), image.numpy()))
    return out


def render_examples(
    images: Sequence[np.ndarray],
    p: Evaluated,
    indices: Sequence[int],
    class_names: Sequence[str],
    baseline: Optional[Evaluated] = None,
    k: int = TOP_K,
    cols: int = 4,
) -> np.ndarray:
    """A grid of images, each with its top-k predictions marked right (green), wrong (red) or unverified (gray).

    Args:
        images: uint8 [H, W, 3] arrays, one per entry of `indices`.
        p: `Evaluated`. Predictions of the model (`prediction.predict_entries`
            with `top_k` at least k).
        indices: int. Rows of `p` the images belong to.
        class_names: list of str. Names shown.
        baseline: the baseline's predictions aligned with `p`, or None; its
            top-k is shown beside the model's (as Veit Fig. 7).
        k: int. Predictions shown per image. Defaults to 5.
        cols: int. Images per row. Defaults to 4.

    Returns:
        uint8 [H, W, 3]: the rendered grid.
    """
    cols = max(1, min(cols, len(indices)))
    rows = math.ceil(len(indices) / cols)
    cell_w = 3.6 if baseline is not None else 2.4
    fig = Figure(figsize=(cell_w * cols, 3.4 * rows), dpi=90)
    grid = fig.add_gridspec(
        rows * 2,
        cols,
        height_ratios=[2.0, 1.0] * rows,
        hspace=0.12,
        wspace=0.06,
        left=0.01,
        right=0.99,
        top=0.97,
        bottom=0.01,
    )
    color = {True: plotting.RIGHT, False: plotting.WRONG, None: plotting.UNKNOWN}
    mark = {True: "\u2713", False: "\u2717", None: "?"}
    columns = [("model", p)] + ([("baseline", baseline)] if baseline is not None else [])
    for n, (image, i) in enumerate(zip(images, indices)):
        r, c = divmod(n, cols)
        ax = fig.add_subplot(grid[2 * r, c])
        ax.imshow(image, interpolation="nearest")
        kind, present = _present(p, i)
        names = ", ".join(class_names[j] for j in present) or "none"
        ax.set_title(_clip(f"{p.ids[i].decode('utf-8', 'replace')} | {kind}: {names}", 44), fontsize=7)
        ax.axis("off")
        text = fig.add_subplot(grid[2 * r + 1, c])
        text.axis("off")
        for j, (label, preds) in enumerate(columns):
            x = j / len(columns)
            text.text(x, 1.0, label, fontsize=7, fontweight="bold", va="top", transform=text.transAxes)
            for line, (cls, score, right) in enumerate(top_k_judged(preds, i, k)):
                text.text(
                    x,
                    0.84 - 0.16 * line,
                    f"{mark[right]} {score:.2f} {_clip(class_names[cls], 18)}",
                    fontsize=7,
                    color=color[right],
                    va="top",
                    transform=text.transAxes,
                )
    return plotting.figure_pixels(fig)
