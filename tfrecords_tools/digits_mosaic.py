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
- `multi_label` with an `annotator` (the transfer benchmark): the same
  mosaics, but the noisy labels are compiled exactly as Hu compiled COCO: a
  classifier trained on a large source task (`glyphs`, printed characters,
  standing in for ImageNet) sees each whole mosaic, and of its top
  `annotator_top_k` (default `TRANSFER_TOP_K` = 4, a mosaic's most digits)
  predictions those that name a digit are the labels; the others (letters,
  symbols) are dropped, as Hu dropped ImageNet classes absent from COCO.
  The noise is whatever that classifier gets wrong on handwritten mosaics:
  `nlr-inspect` measures it.
- `single_label` (Clothing1M-like): single 32x32 digits with class-
  conditional structured noise: class c is flipped with probability rho_c
  (mean 0.375, spread over classes) to classes drawn from the annotator's
  confusion row of c, so about 35-40 % of labels are wrong.

Digits ("scans") are divided (stratified, seeded) into disjoint pools: the
annotator's, training, validation and test, so test images are built from
scans never seen in training images.

The clean sets are small in information, not only in count. A mosaic reuses
scans: the 12,000 training images are built from only ~1,060 training scans,
so if clean images were a random share of the training images, the 5 % clean
set (600 mosaics, ~1,500 digits) would already show about three quarters of
the training scans -- nearly everything the noisy set shows, with verified
labels. A method given "5 % clean data" would in effect see most of the
data's information clean, and the clean fraction would not measure what the
papers vary. So the training scans are divided too:

- clean pools: a seeded permutation of each class's training scans; the pool
  of fraction f is the first round(f * n_c) (at least one) scans of each
  class c, so pools are stratified by class and nested (the 1 % pool is in
  the 2 % pool, ... in the 20 % pool);
- clean images are built in segments over the ladder of fractions
  `sorted(CLEAN_FRACTIONS + the requested fractions)` (CLEAN_FRACTIONS are 1,
  2, 5, 10 and 20 %): segment k holds round(f_k N) - round(f_(k-1) N) images
  built only from the pool of f_k, and the clean set of f_k is segments 1..k.
  The clean set of fraction f therefore uses only the scans of the pool of f
  (the 5 % clean set shows about 5 % of the training scans), and smaller
  clean sets are inside larger ones. As the ladder always holds
  CLEAN_FRACTIONS, requesting any of them gives the same dataset (the
  `clean` split at 0.05 is the `clean_05` split of a dataset with clean
  splits 0.01-0.2); requesting another fraction adds a rung: the clean sets
  below it keep their images, training images above it change;
- every other training image (noisy labels only) is built from the training
  scans outside the largest pool of the ladder, so noisy-only images share
  no scan with clean images.

The clean images are placed at seeded random positions among the training
images (image ids do not reveal cleanness). Noise is made the same way for
clean and noisy-only images. Splits:

- `noisy`: every training image (clean ones included) with its noisy labels;
- `clean`: the clean set of `clean_fraction`, with noisy and fully verified
  labels; `clean_01`, `clean_05`, ... (`nested_fractions`): the clean sets of
  other fractions of the same ladder;
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
from nlr_tf.data.subsets import nested_split_name
from tfrecords_tools.records import Conversion, ConversionError, Record, complement

VARIANTS = ("multi_label", "single_label")
CLEAN_FRACTIONS = (0.01, 0.02, 0.05, 0.10, 0.20)  # always on the clean ladder
DEFAULT_SIZES = {"multi_label": (12000, 2000, 4000), "single_label": (12000, 2000, 4000)}
IMAGE_SIZE = 32
NUM_CLASSES = 10
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

ANNOTATOR_DIGITS_PER_CLASS = 3
TARGET_DIGIT_ERROR = 0.23  # multi-label: share of digits the annotator mislabels
EXTRA_LABEL_PROB = 0.10  # multi-label: chance to add the annotator's runner-up class
SINGLE_LABEL_FLIP_MEAN = 0.375  # single-label: mean flip probability
SINGLE_LABEL_FLIP_SPREAD = 0.10  # single-label: per-class spread around the mean
TRANSFER_TOP_K = 4  # multi-label with a source annotator: its predictions kept per mosaic (a mosaic holds 1-4 digits)
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


def _num_clean(fraction: float, num_train: int) -> int:
    """Clean images of a fraction: round(fraction * num_train), at least one."""
    return max(1, int(round(fraction * num_train)))


def _ladder(clean_fraction: float, nested_fractions=()) -> tuple[float, ...]:
    """The fractions clean images are built over: CLEAN_FRACTIONS and the requested ones."""
    if not 0.0 < clean_fraction <= 1.0:
        raise ConversionError(f"clean_fraction must be in (0, 1], got {clean_fraction}")
    for fraction in nested_fractions:
        if not 0.0 < fraction <= 1.0:
            raise ConversionError(f"nested clean fractions must be in (0, 1], got {fraction}")
    return tuple(sorted(set(CLEAN_FRACTIONS) | {float(clean_fraction)} | {float(f) for f in nested_fractions}))


def _clean_pools(
    train_scans: np.ndarray, labels: np.ndarray, fractions, rng: np.random.Generator
) -> dict[float, np.ndarray]:
    """Nested, class-stratified clean scan pools, one per fraction.

    One seeded permutation of each class's training scans; the pool of
    fraction f is its first round(f * n_c) scans (at least one) of each
    class c, so a smaller fraction's pool is inside a larger one's.
    """
    per_class = [rng.permutation(train_scans[labels[train_scans] == c]) for c in range(NUM_CLASSES)]
    return {
        f: np.sort(np.concatenate([idx[: max(1, int(round(f * len(idx))))] for idx in per_class])) for f in fractions
    }


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for one part of the data (so parts don't shift each other)."""
    return np.random.default_rng([seed, *key])


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


def single_image(digit: np.ndarray, rng: np.random.Generator, sizes: tuple[int, int] = (22, 28)) -> np.ndarray:
    """One 8x8 array (values 0-16) drawn at a random side in `sizes` (inclusive) on a noisy background.

    The single-label variant's image; the `glyphs` source draws its
    characters with it too, so both are rendered the same way.

    Returns:
        uint8 array [IMAGE_SIZE, IMAGE_SIZE].
    """
    canvas = _background(rng)
    size = int(rng.integers(sizes[0], sizes[1] + 1))
    y0, x0 = rng.integers(0, IMAGE_SIZE - size + 1, size=2)
    _paste(canvas, digit, size, y0, x0, rng)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _single(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return single_image(digit, rng)


def _multi_label_images(n, pool, digits, targets, annotator, rng):
    """Mosaics, their true label lists and the annotator's noisy label lists."""
    if n == 0:
        return [], [], [], []
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


class _TopKAnnotator:
    """An image classifier over many classes as the multi-label annotator, as Hu et al. 2019 compiled COCO.

    Hu ran an ImageNet Inception V3 over every whole COCO image, kept its
    top 8 of 1,000 predictions and mapped them to COCO's classes, dropping
    ImageNet classes absent from COCO. Here a source classifier (any object
    with `class_names` and `scores(images) -> [N, C]`, such as
    `nlr_tf.evaluation.annotator.RunAnnotator`) sees each whole mosaic; of
    its `top_k` highest-scoring classes, those named as one of the ten digits
    (`CLASS_NAMES`) are the mosaic's noisy labels, the others are dropped.
    """

    def __init__(self, source, top_k: int):
        if top_k < 1:
            raise ConversionError(f"the annotator's top_k must be at least 1, got {top_k}")
        names = list(source.class_names)
        self.target = np.array([CLASS_NAMES.index(n) if n in CLASS_NAMES else -1 for n in names])
        missing = sorted(set(CLASS_NAMES) - set(names))
        if missing:
            raise ConversionError(
                f"the annotator's classes must include the ten digits by name ({', '.join(CLASS_NAMES)}); "
                f"it lacks {', '.join(missing)}"
            )
        self.source, self.top_k = source, min(top_k, len(names))

    def labels(self, images: list) -> list[list[int]]:
        scores = self.source.scores(np.stack(images))
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        mapped = self.target[top]
        return [sorted({int(c) for c in row if c >= 0}) for row in mapped]


def _annotated_mosaics(n, pool, digits, targets, annotator: _TopKAnnotator, rng):
    """Mosaics as `_multi_label_images` draws them, noisy labels from a whole-image annotator."""
    if n == 0:
        return [], [], [], []
    counts = rng.integers(1, 5, size=n)
    picks = [rng.choice(pool, size=k) for k in counts]
    images, true = [], []
    for k, pick in zip(counts, picks):
        cells = rng.permutation(4)[:k]
        images.append(_mosaic(digits[pick], cells, rng))
        true.append(sorted(set(targets[pick].tolist())))
    return images, true, annotator.labels(images), picks


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


def _concat(parts):
    """Joins (images, true, noisy, picks) tuples."""
    return tuple([x for part in parts for x in part[i]] for i in range(4))


def build(
    variant: str = "multi_label",
    clean_fraction: float = 0.1,
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
    nested_fractions: tuple[float, ...] = (),
    annotator=None,
    annotator_top_k: int = 0,
) -> tuple[dict, set, dict]:
    """Builds the images and labels of every split in memory.

    Args:
        nested_fractions: the other clean fractions the dataset will hold a
            clean split for; they join the ladder of fractions the clean
            images are built over (see the module docstring).
        annotator: None, or a source classifier (`class_names`,
            `scores(images)`) that compiles the multi-label noisy labels
            from each whole mosaic (the transfer benchmark; `_TopKAnnotator`).
        annotator_top_k: int. The annotator's predictions kept per mosaic
            (`TRANSFER_TOP_K` when 0).

    Returns:
        (built, clean_indices, details): `built[name]` for name in train,
        val, test is (images, true label lists, noisy label lists, the
        indices into sklearn's digits each image is made of);
        `clean_indices` are the training images of the `clean` split.
        `details` is the provenance (JSON-ready) plus two entries `convert`
        removes: `clean_order`, a permutation of the training images whose
        first `_num_clean(f, num_train)` entries are the clean set of
        fraction f (for every f of `details["clean_ladder"]`), and
        `clean_pool_scans`, the scans (sorted indices into sklearn's
        digits) of each clean pool, by split name (`clean_05`, ...).
    """
    if variant not in VARIANTS:
        raise ConversionError(f"unknown digits_mosaic variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    ladder = _ladder(clean_fraction, nested_fractions)
    source_annotator = annotator  # the name below is the scratch benchmark's per-digit annotator
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
    if source_annotator is not None:
        if variant != "multi_label":
            raise ConversionError("an annotator compiles multi-label noise; single_label keeps its class noise")
        top_k = _TopKAnnotator(source_annotator, annotator_top_k or TRANSFER_TOP_K)
        details["annotator"] = {
            **getattr(source_annotator, "description", {}),
            "top_k": top_k.top_k,
            "source_classes": len(top_k.target),
        }

        def make(n, pool, stream):
            return _annotated_mosaics(n, pool, digits, targets, top_k, stream)

    elif variant == "multi_label":
        train_digits = digits[pools["train"]] + rng.normal(0.0, SENSOR_NOISE, digits[pools["train"]].shape)
        details["annotator_temperature"] = annotator.calibrate(
            train_digits, targets[pools["train"]], TARGET_DIGIT_ERROR
        )

        def make(n, pool, stream):
            return _multi_label_images(n, pool, digits, targets, annotator, stream)

    else:
        transition = _transition_matrix(annotator, digits[pools["train"]], targets[pools["train"]], rng)
        details["transition_matrix"] = np.round(transition, 4).tolist()

        def make(n, pool, stream):
            return _single_label_images(n, pool, digits, targets, transition, stream)

    # Training images: clean segments over the ladder, then noisy-only images.
    num_train = sizes["train"]
    clean_pools = _clean_pools(pools["train"], targets, ladder, _stream(seed, 1))
    noisy_only_pool = np.setdiff1d(pools["train"], clean_pools[ladder[-1]])
    num_noisy_only = num_train - _num_clean(ladder[-1], num_train)
    missing = sorted(set(range(NUM_CLASSES)) - set(targets[noisy_only_pool].tolist()))
    if num_noisy_only and missing:
        raise ConversionError(
            f"clean fraction {ladder[-1]} leaves no training scans of classes {missing} for the noisy-only images"
        )
    parts, done = [], 0
    for f in ladder:
        n = _num_clean(f, num_train) - done
        parts.append(make(n, clean_pools[f], _stream(seed, 2, int(round(f * 1_000_000)))))
        done += n
    parts.append(make(num_noisy_only, noisy_only_pool, _stream(seed, 3)))
    constructed = _concat(parts)
    # Construction index j goes to image position order[j]: clean images at seeded positions.
    order = _stream(seed, 4).permutation(num_train)
    at = np.argsort(order)
    built = {"train": tuple([part[j] for j in at] for part in constructed)}
    for key, name in ((5, "val"), (6, "test")):
        built[name] = make(sizes[name], pools[name], _stream(seed, key))

    picks = constructed[3]
    names = {f: nested_split_name(f) for f in ladder}

    def scans_used(start, stop):
        return int(len(np.unique(np.concatenate(picks[start:stop])))) if stop > start else 0

    details["clean_ladder"] = list(ladder)
    details["scan_pools"] = {
        **{names[f]: int(len(clean_pools[f])) for f in ladder},
        "noisy_only": int(len(noisy_only_pool)),
        "train": int(len(pools["train"])),
    }
    details["clean_images"] = {names[f]: _num_clean(f, num_train) for f in ladder}
    details["scans_used"] = {
        **{names[f]: scans_used(0, _num_clean(f, num_train)) for f in ladder},
        "noisy_only": scans_used(num_train - num_noisy_only, num_train),
    }
    num_clean = _num_clean(clean_fraction, num_train)
    details["num_clean"] = num_clean
    details["clean_order"] = order
    details["clean_pool_scans"] = {names[f]: clean_pools[f] for f in ladder}
    return built, set(order[:num_clean].tolist()), details


def convert(
    variant: str = "multi_label",
    clean_fraction: float = 0.1,
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
    nested_fractions: tuple[float, ...] = (),
    annotator=None,
    annotator_top_k: int = 0,
) -> Conversion:
    """A digits_mosaic dataset as a `Conversion`.

    Args:
        variant: str. "multi_label" (mosaics) or "single_label" (one digit).
        clean_fraction: float. Share of training images in the `clean`
            split; the papers' settings are 0.05, 0.10 and 0.20. The clean
            images are built only from the same share of the training
            scans (see the module docstring).
        seed: int. Every random choice derives from it. Defaults to 0.
        num_train, num_val, num_test: int. Split sizes; default per variant.
        nested_fractions: tuple of float. Extra clean splits, one per
            fraction, named by `nested_split_name` (0.05 -> `clean_05`): the
            same nested sets the `clean` split is at that `clean_fraction`
            (for fractions in CLEAN_FRACTIONS), so one dataset (and one
            feature cache) serves several fractions.
        annotator, annotator_top_k: the transfer benchmark's multi-label
            noise: a source classifier's top-k predictions on each whole
            mosaic, mapped to the ten digits (see `build`).

    Returns:
        A `Conversion` of splits noisy, clean, clean_all, val and test (and
        the nested clean splits).
    """
    built, clean_ids, details = build(
        variant, clean_fraction, seed, num_train, num_val, num_test, nested_fractions, annotator, annotator_top_k
    )
    sizes = details["sizes"]
    num_clean = details["num_clean"]
    order = details.pop("clean_order")
    details.pop("clean_pool_scans")
    nested = {
        nested_split_name(fraction): set(order[: _num_clean(fraction, sizes["train"])].tolist())
        for fraction in nested_fractions
    }
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
