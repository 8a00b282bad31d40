"""The `digits_mosaic` benchmark: noisy-label datasets built from real digits.

Built from scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
no download), so the whole pipeline runs offline. Two variants:

- `multi_label` (COCO-like, as Hu et al. 2019 compiled COCO): 32x32 mosaics
  of 1-4 digits on a 2x2 grid, 10 classes. Noisy labels come from a weak
  automatic annotator -- a logistic regression trained on three digits per
  class -- applied to every digit of the mosaic, the way Hu tagged COCO with
  an ImageNet Inception V3: each digit gets the annotator's label (drawn
  from its class probabilities, sharpened by a temperature calibrated so
  that about 23 % of digits are mislabeled), and with probability 0.1 also
  the annotator's next most likely class. The noise is therefore structured
  (the annotator's confusions: 3/8/9, 1/7, 4/9, ...), not uniform flips:
  about 20-35 % of noisy annotations are false and 15-30 % of true labels
  are missed.
- `single_label` (Clothing1M-like): single 32x32 digits with class-
  conditional structured noise: class c is flipped with probability rho_c
  (mean 0.375, spread over classes) to classes drawn from the annotator's
  confusion row of c, so about 35-40 % of labels are wrong.

Digits are divided (stratified, seeded) into disjoint pools: the
annotator's, training, validation and test, so test images are built from
digits never seen in training images. Splits:

- `noisy`: every training image with its noisy labels;
- `clean`: the first `clean_fraction` of a seeded permutation of the
  training images (nested: the 5 % set is inside the 10 % set), with noisy
  and fully verified labels;
- `clean_all`: every training image with verified labels -- for the `clean`
  upper bound (Hu's "Backbone (GT)") only;
- `val`, `test`: held-out images, fully verified, with noisy labels too.

Every record carries `label/true`. Everything is seeded and deterministic.
"""

from collections.abc import Iterator
from typing import Optional

import numpy as np
from PIL import Image

from nlr_tf.data.schema import ClassInfo
from tfrecords_tools.records import Conversion, ConversionError, Record, complement

VARIANTS = ("multi_label", "single_label")
CLEAN_FRACTIONS = (0.05, 0.10, 0.20)
DEFAULT_SIZES = {"multi_label": (12000, 2000, 4000), "single_label": (12000, 2000, 4000)}
IMAGE_SIZE = 32
NUM_CLASSES = 10
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

ANNOTATOR_DIGITS_PER_CLASS = 3
TARGET_DIGIT_ERROR = 0.23  # multi-label: share of digits the annotator mislabels
EXTRA_LABEL_PROB = 0.10  # multi-label: chance to add the annotator's runner-up class
SINGLE_LABEL_FLIP_MEAN = 0.375  # single-label: mean flip probability
SINGLE_LABEL_FLIP_SPREAD = 0.10  # single-label: per-class spread around the mean
SENSOR_NOISE = 1.0  # std of the pixel noise the annotator sees (pixels are 0-16)
POOL_SHARES = (0.6, 0.15, 0.25)  # train, val, test digits after the annotator's


def _classes() -> list[ClassInfo]:
    return [
        ClassInfo(id=str(i), name=name, category="round" if i in (0, 6, 8, 9) else "straight")
        for i, name in enumerate(CLASS_NAMES)
    ]


def _split_pools(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stratified disjoint digit pools: annotator, train, val, test."""
    pools: dict[str, list[int]] = {"annotator": [], "train": [], "val": [], "test": []}
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        pools["annotator"] += idx[:ANNOTATOR_DIGITS_PER_CLASS].tolist()
        rest = idx[ANNOTATOR_DIGITS_PER_CLASS:]
        n_train = int(round(POOL_SHARES[0] * len(rest)))
        n_val = int(round(POOL_SHARES[1] * len(rest)))
        pools["train"] += rest[:n_train].tolist()
        pools["val"] += rest[n_train : n_train + n_val].tolist()
        pools["test"] += rest[n_train + n_val :].tolist()
    return {k: np.asarray(sorted(v)) for k, v in pools.items()}


class _Annotator:
    """A weak automatic annotator: logistic regression on very few digits.

    It sees each digit with pixel noise (`SENSOR_NOISE`), so the same scan
    can be labeled differently in two images.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(max_iter=5000).fit(images.reshape(len(images), -1) / 16.0, labels)
        self.temperature = 1.0

    def log_proba(self, digits: np.ndarray) -> np.ndarray:
        return self.model.predict_log_proba(digits.reshape(len(digits), -1).astype(np.float64) / 16.0)

    def proba(self, digits: np.ndarray) -> np.ndarray:
        logits = self.log_proba(digits) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def calibrate(self, digits: np.ndarray, labels: np.ndarray, target_error: float) -> float:
        """Sets the temperature so the expected share of wrong labels is `target_error`."""
        lo, hi = 1e-3, 100.0
        for _ in range(60):
            self.temperature = np.sqrt(lo * hi)
            error = 1.0 - self.proba(digits)[np.arange(len(labels)), labels].mean()
            lo, hi = (self.temperature, hi) if error < target_error else (lo, self.temperature)
        return float(self.temperature)


def _render(digit: np.ndarray, size: int, intensity: float) -> np.ndarray:
    img = Image.fromarray((digit * (255.0 / 16.0)).astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.BILINEAR), np.float32) * intensity


def _background(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.normal(0.0, 6.0, (IMAGE_SIZE, IMAGE_SIZE)), 0, 255).astype(np.float32)


def _paste(canvas: np.ndarray, digit: np.ndarray, size: int, y0: int, x0: int, rng: np.random.Generator) -> None:
    """Draws `digit` at `size` px with its top-left corner at (y0, x0), brighter pixel wins."""
    region = canvas[y0 : y0 + size, x0 : x0 + size]
    np.maximum(region, _render(digit, size, rng.uniform(0.6, 1.0)), out=region)


def _mosaic(digits: np.ndarray, cells: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    canvas = _background(rng)
    half = IMAGE_SIZE // 2
    for digit, cell in zip(digits, cells):
        size = int(rng.integers(12, 15))
        dy, dx = rng.integers(0, half - size + 1, size=2)
        _paste(canvas, digit, size, (cell // 2) * half + dy, (cell % 2) * half + dx, rng)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _single(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    canvas = _background(rng)
    size = int(rng.integers(22, 29))
    y0, x0 = rng.integers(0, IMAGE_SIZE - size + 1, size=2)
    _paste(canvas, digit, size, y0, x0, rng)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _multi_label_images(n, pool, digits, targets, annotator, rng):
    """Mosaics, their true label lists and the annotator's noisy label lists."""
    counts = rng.integers(1, 5, size=n)
    picks = [rng.choice(pool, size=k) for k in counts]
    flat = np.concatenate(picks)
    proba = annotator.proba(digits[flat] + rng.normal(0.0, SENSOR_NOISE, digits[flat].shape))
    drawn = np.array([rng.choice(NUM_CLASSES, p=p) for p in proba])
    masked = proba.copy()
    masked[np.arange(len(drawn)), drawn] = -1.0
    runner_up = masked.argmax(axis=1)
    extra = rng.random(len(drawn)) < EXTRA_LABEL_PROB
    images, true, noisy = [], [], []
    start = 0
    for k, pick in zip(counts, picks):
        cells = rng.permutation(4)[:k]
        images.append(_mosaic(digits[pick], cells, rng))
        true.append(sorted(set(targets[pick].tolist())))
        sl = slice(start, start + k)
        labels = set(drawn[sl].tolist()) | set(runner_up[sl][extra[sl]].tolist())
        noisy.append(sorted(labels))
        start += k
    return images, true, noisy, picks


def _transition_matrix(annotator, digits, targets, rng) -> np.ndarray:
    """Class-conditional noise: T[c, k] = P(noisy = k | true = c)."""
    proba = annotator.proba(digits)
    confusion = np.stack([proba[targets == c].mean(axis=0) for c in range(NUM_CLASSES)])
    np.fill_diagonal(confusion, 0.0)
    confusion = confusion**3  # sharpen: a class is confused mostly with one or two others
    confusion /= confusion.sum(axis=1, keepdims=True)
    spread = rng.uniform(-1.0, 1.0, NUM_CLASSES)
    flip = (
        SINGLE_LABEL_FLIP_MEAN
        + SINGLE_LABEL_FLIP_SPREAD * (spread - spread.mean()) / np.abs(spread - spread.mean()).max()
    )
    return (1.0 - flip)[:, None] * np.eye(NUM_CLASSES) + flip[:, None] * confusion


def _single_label_images(n, pool, digits, targets, transition, rng):
    pick = rng.choice(pool, size=n)
    images = [_single(digits[i], rng) for i in pick]
    true = targets[pick]
    noisy = np.array([rng.choice(NUM_CLASSES, p=transition[c]) for c in true])
    return images, [[int(t)] for t in true], [[int(v)] for v in noisy], [np.array([i]) for i in pick]


def build(
    variant: str = "multi_label",
    clean_fraction: float = 0.1,
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
) -> tuple[dict, set, dict]:
    """Builds the images and labels of every split in memory.

    Returns:
        (built, clean_indices, details): `built[name]` for name in train,
        val, test is (images, true label lists, noisy label lists, the
        indices into sklearn's digits each image is made of);
        `clean_indices` are the training images of the `clean` split.
    """
    if variant not in VARIANTS:
        raise ConversionError(f"unknown digits_mosaic variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if not 0.0 < clean_fraction <= 1.0:
        raise ConversionError(f"clean_fraction must be in (0, 1], got {clean_fraction}")
    from sklearn.datasets import load_digits

    default = DEFAULT_SIZES[variant]
    sizes = {
        "train": num_train or default[0],
        "val": num_val or default[1],
        "test": num_test or default[2],
    }
    data = load_digits()
    digits, targets = data.images.astype(np.float32), data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    pools = _split_pools(targets, rng)
    annotator = _Annotator(digits[pools["annotator"]], targets[pools["annotator"]])
    details = {
        "variant": variant,
        "clean_fraction": clean_fraction,
        "seed": seed,
        "sizes": sizes,
        "digit_pools": {k: int(len(v)) for k, v in pools.items()},
        "image_size": IMAGE_SIZE,
    }
    built = {}
    if variant == "multi_label":
        train_digits = digits[pools["train"]] + rng.normal(0.0, SENSOR_NOISE, digits[pools["train"]].shape)
        details["annotator_temperature"] = annotator.calibrate(
            train_digits, targets[pools["train"]], TARGET_DIGIT_ERROR
        )
        for name in ("train", "val", "test"):
            built[name] = _multi_label_images(sizes[name], pools[name], digits, targets, annotator, rng)
    else:
        transition = _transition_matrix(annotator, digits[pools["train"]], targets[pools["train"]], rng)
        details["transition_matrix"] = np.round(transition, 4).tolist()
        for name in ("train", "val", "test"):
            built[name] = _single_label_images(sizes[name], pools[name], digits, targets, transition, rng)
    num_clean = max(1, int(round(clean_fraction * sizes["train"])))
    order = rng.permutation(sizes["train"])
    details["num_clean"] = num_clean
    details["clean_order"] = order
    return built, set(order[:num_clean].tolist()), details


def nested_split_name(fraction: float) -> str:
    """Split name of an extra clean set: 0.05 -> `clean_05`."""
    return f"clean_{int(round(fraction * 100)):02d}"


def convert(
    variant: str = "multi_label",
    clean_fraction: float = 0.1,
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
    nested_fractions: tuple[float, ...] = (),
) -> Conversion:
    """A digits_mosaic dataset as a `Conversion`.

    Args:
        variant: str. "multi_label" (mosaics) or "single_label" (one digit).
        clean_fraction: float. Share of training images in the `clean`
            split; the papers' settings are 0.05, 0.10 and 0.20.
        seed: int. Every random choice derives from it. Defaults to 0.
        num_train, num_val, num_test: int. Split sizes; default per variant.
        nested_fractions: tuple of float. Extra clean splits, one per
            fraction, named by `nested_split_name` (0.05 -> `clean_05`): the
            same nested sets the `clean` split is at that `clean_fraction`,
            so one dataset (and one feature cache) serves several fractions.

    Returns:
        A `Conversion` of splits noisy, clean, clean_all, val and test (and
        the nested clean splits).
    """
    built, clean_ids, details = build(variant, clean_fraction, seed, num_train, num_val, num_test)
    sizes = details["sizes"]
    num_clean = details["num_clean"]
    order = details.pop("clean_order")
    nested = {}
    for fraction in nested_fractions:
        if not 0.0 < fraction <= 1.0:
            raise ConversionError(f"nested clean fractions must be in (0, 1], got {fraction}")
        nested[nested_split_name(fraction)] = set(order[: max(1, int(round(fraction * sizes["train"])))].tolist())
    details["nested_clean_splits"] = {name: len(ids) for name, ids in nested.items()}

    def items() -> Iterator[Record]:
        images, true, noisy, _ = built["train"]
        for i, (image, t, y) in enumerate(zip(images, true, noisy)):
            image_id = f"train-{i:06d}"
            verified = {"verified_pos": t, "verified_neg": complement(t, NUM_CLASSES)}
            yield Record("noisy", image_id, noisy=y, true=t, image_array=image, origin=f"digits_mosaic:{image_id}")
            if i in clean_ids:
                yield Record("clean", image_id, noisy=y, true=t, image_array=image, **verified)
            for name, ids in nested.items():
                if i in ids:
                    yield Record(name, image_id, noisy=y, true=t, image_array=image, **verified)
            yield Record("clean_all", image_id, noisy=y, true=t, image_array=image, **verified)
        for split in ("val", "test"):
            images, true, noisy, _ = built[split]
            for i, (image, t, y) in enumerate(zip(images, true, noisy)):
                image_id = f"{split}-{i:06d}"
                yield Record(
                    split,
                    image_id,
                    noisy=y,
                    verified_pos=t,
                    verified_neg=complement(t, NUM_CLASSES),
                    true=t,
                    image_array=image,
                    origin=f"digits_mosaic:{image_id}",
                )

    total = 2 * sizes["train"] + num_clean + sum(map(len, nested.values())) + sizes["val"] + sizes["test"]
    return Conversion(
        classes=_classes(),
        multi_label=variant == "multi_label",
        items=items(),
        source="digits_mosaic",
        total=total,
        details=details,
    )
