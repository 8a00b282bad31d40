"""The `glyphs` source: printed characters, the transfer benchmark's source task.

Hu et al. (2019) compiled COCO's noisy labels with a classifier trained on
ImageNet: a large, labelled *source* task whose 1,000 classes include many
of the target's, in a different domain (ImageNet's object-centred photos,
COCO's scenes). `glyphs` plays ImageNet for `digits_mosaic`: 76 classes of
printed characters that include the target's ten digits, under the same
names (`digits_mosaic.CLASS_NAMES`, so a source classifier maps to the
target by name), among letters and symbols -- printed in typefaces, where the
target's digits are handwritten.

Classes (single-label, in this order; category in the label map):

- `digit`: 0-9, named `zero` ... `nine` as in digits_mosaic;
- `upper`: A-Z, named `upper_A` ...; `lower`: a-z, named `lower_a` ...;
- `symbol`: + - = ? ! # % & @ $ * / ( ), named `plus`, `hyphen`, ...

Every lowercase letter is kept. Each character is placed in its line: the
box fitted into the bitmap spans its own ink and the font's capital band
(the top of "H" to the baseline), so an x-height letter (c o s v w x z) is
smaller and lower than its capital, as in print. Some characters remain
alike in some faces (l, I and 1 in sans faces; O and 0), so a source
classifier cannot reach 100 % top-1.

Fonts: the TrueType text faces shipped inside the matplotlib wheel
(`mpl-data/fonts/ttf`): DejaVu Sans, Serif and Sans Mono with their bold
and oblique faces, STIX General and NonUnicode, and the Computer Modern text
faces (cmr10, cmb10, cmss10, cmtt10, cmti10, cmmi10); symbol and size fonts
(cmsy10, cmex10, STIXSize*, DejaVu*Display, LastResort) are not candidates.
A candidate is kept only if every class character maps, in its character
map, to a glyph named for that character and renders non-empty and unlike
the .notdef glyph (the rendering of U+E000 and U+10FFFF). cmmi10 maps its
digits and symbols to old-style figures and math symbols and the STIX
NonUnicode faces map no ASCII: they are left out. The other Computer Modern
text faces map `<` and `>` to inverted marks (their TeX positions), so
these two are not classes. The kept and rejected faces are in the
provenance (21 kept with matplotlib 3.11).

An image is made as the UCI handwritten digits behind digits_mosaic were
scanned -- a 32x32 binary bitmap, then the number of on pixels in each
non-overlapping 4x4 block, an 8x8 array of 0..16:

1. the character is drawn with PIL/FreeType at `BASE_FONT_SIZE` px with a
   random stroke (`STROKE_WIDTHS`: 0-4 px at that size, up to about 2 px
   at the bitmap's scale); these base renderings are cached;
2. its line box (above), widened by a random factor (`WIDEN`), is fitted
   into the 32-px bitmap at a random share of the side (`FILL`), with a
   random rotation (`ROTATION_DEGREES`), shear (`SHEAR`) and translation
   (within the margin the fit leaves);
3. an elastic distortion (Simard et al. 2003): a random displacement field
   smoothed by a Gaussian (`ELASTIC_SIGMA`) and scaled by a random
   `ELASTIC_ALPHA`; the sampled bitmap is thresholded at one half;
4. the 4x4 block counts (0..16); with probability `BLUR_PROB` a small
   Gaussian blur, then noise (`COUNT_NOISE`), rounded and clipped to 0..16;
5. the 8x8 array drawn into a 32x32 grayscale image by digits_mosaic's own
   rendering (`digits_mosaic.single_image`: bilinear upscaling, random
   intensity, noisy background) at a side drawn uniformly from
   `glyph_sizes` -- by default 12-28 px, covering both the target's mosaic
   cells (12-14 px) and its single digits (22-28 px).

Splits (classes balanced in each, fonts too):

- `noisy`: training images from the training fonts, labels exact (noisy =
  true = verified present; every other class verified absent);
- `val`: other renderings of the training fonts, fully verified;
- `test`: renderings of the held-out fonts only (by default three, one
  each of DejaVu, STIX and Computer Modern, chosen from the seed).

Every random choice derives from the seed; each split has its own stream.
"""

import functools
import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from nlr_tf.data.schema import ClassInfo
from tfrecords_tools.digits_mosaic import CLASS_NAMES as DIGIT_NAMES
from tfrecords_tools.digits_mosaic import IMAGE_SIZE, single_image
from tfrecords_tools.records import Conversion, ConversionError, Record, complement

SOURCE = "glyphs"
DEFAULT_SIZES = (40000, 2000, 4000)  # train, val, test
DEFAULT_GLYPH_SIZES = (12, 28)  # side of the 8x8 array drawn into the 32-px image

# The candidate text faces (file stems in mpl-data/fonts/ttf), by family group; a group gives one held-out face.
CANDIDATE_FONTS = {
    "DejaVu": (
        "DejaVuSans",
        "DejaVuSans-Bold",
        "DejaVuSans-Oblique",
        "DejaVuSans-BoldOblique",
        "DejaVuSerif",
        "DejaVuSerif-Bold",
        "DejaVuSerif-Italic",
        "DejaVuSerif-BoldItalic",
        "DejaVuSansMono",
        "DejaVuSansMono-Bold",
        "DejaVuSansMono-Oblique",
        "DejaVuSansMono-BoldOblique",
    ),
    "STIX": (
        "STIXGeneral",
        "STIXGeneralBol",
        "STIXGeneralItalic",
        "STIXGeneralBolIta",
        "STIXNonUni",
        "STIXNonUniBol",
        "STIXNonUniIta",
        "STIXNonUniBolIta",
    ),
    "Computer Modern": ("cmr10", "cmb10", "cmss10", "cmtt10", "cmti10", "cmmi10"),
}
NOTDEF_PROBES = ("\ue000", "\U0010ffff")  # unmapped code points: they render the .notdef glyph

SYMBOLS = (
    ("+", "plus"),
    ("-", "hyphen"),
    ("=", "equals"),
    ("?", "question"),
    ("!", "exclamation"),
    ("#", "hash"),
    ("%", "percent"),
    ("&", "ampersand"),
    ("@", "at"),
    ("$", "dollar"),
    ("*", "asterisk"),
    ("/", "slash"),
    ("(", "paren_left"),
    (")", "paren_right"),
)
# (character, class name, category) of every class, index order.
CLASSES = (
    tuple((str(d), DIGIT_NAMES[d], "digit") for d in range(10))
    + tuple((c, f"upper_{c}", "upper") for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    + tuple((c, f"lower_{c}", "lower") for c in "abcdefghijklmnopqrstuvwxyz")
    + tuple((c, name, "symbol") for c, name in SYMBOLS)
)
CHARACTERS = tuple(c for c, _, _ in CLASSES)
NUM_CLASSES = len(CLASSES)

# The rendering (see the module docstring).
BITMAP_SIZE = 32  # the binary bitmap, as UCI's
BLOCK = 4  # UCI's blocks: 32x32 -> 8x8 counts of 0..16
BASE_FONT_SIZE = 64
STROKE_WIDTHS = (0, 1, 2, 3, 4)  # px at BASE_FONT_SIZE
FILL = (0.8, 1.0)  # the line box's longer side, as a share of the bitmap's (UCI's digits fill theirs)
WIDEN = (0.85, 1.4)  # width scaled by a log-uniform factor in this range (UCI's digits are wider than print)
ROTATION_DEGREES = 12.0
SHEAR = 0.25
ELASTIC_SIGMA = 4.0  # bitmap px
ELASTIC_ALPHA = (0.0, 34.0)  # Simard et al.: sigma 4, alpha 34 on 28x28 MNIST
BLUR_PROB = 0.5
BLUR_SIGMA = (0.3, 0.6)  # in 8x8 blocks
COUNT_NOISE = 0.25  # std of the noise added to the 0..16 counts before rounding


def font_dir() -> str:
    """The folder of TrueType fonts inside the installed matplotlib."""
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


def _classes() -> list[ClassInfo]:
    return [ClassInfo(id=str(i), name=name, category=category) for i, (_, name, category) in enumerate(CLASSES)]


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for one part of the data (so parts don't shift each other)."""
    return np.random.default_rng([seed, *key])


# === Fonts ===
@functools.lru_cache(maxsize=None)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, BASE_FONT_SIZE)


def _draw(font: ImageFont.FreeTypeFont, text: str, stroke: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """`text` drawn white on black: (float32 [h, w] in [0, 1], its box (x0, y0, x1, y1) from the left baseline)."""
    box = font.getbbox(text, anchor="ls", stroke_width=stroke)
    x0, y0 = box[0], box[1]
    size = (max(1, box[2] - x0), max(1, box[3] - y0))
    image = Image.new("L", size, 0)
    ImageDraw.Draw(image).text((-x0, -y0), text, font=font, fill=255, anchor="ls", stroke_width=stroke, stroke_fill=255)
    return np.asarray(image, np.float32) / 255.0, box


@functools.lru_cache(maxsize=None)
def font_problems(path: str) -> tuple[str, ...]:
    """Why a font cannot draw every class character; empty when it can.

    A character fails if the font's character map sends it to a glyph not
    named for it (a remapped position, as the Computer Modern fonts'), or
    it renders empty, or like the .notdef glyph (`NOTDEF_PROBES`).
    """
    from fontTools.agl import toUnicode
    from fontTools.ttLib import TTFont

    if not os.path.isfile(path):
        return ("file not found",)
    cmap = TTFont(path, lazy=True).getBestCmap() or {}
    font = _font(path)
    notdef = [_draw(font, probe, 0)[0] for probe in NOTDEF_PROBES]
    problems = []
    for ch in CHARACTERS:
        glyph = cmap.get(ord(ch))
        if glyph is None:
            problems.append(f"{ch!r} is not mapped")
            continue
        if toUnicode(glyph) != ch:
            problems.append(f"{ch!r} maps to glyph {glyph!r}")
            continue
        bitmap = _draw(font, ch, 0)[0]
        if bitmap.max() == 0:
            problems.append(f"{ch!r} renders empty")
        elif any(bitmap.shape == n.shape and np.array_equal(bitmap, n) for n in notdef):
            problems.append(f"{ch!r} renders the .notdef glyph")
    return tuple(problems)


def survey_fonts(folder: Optional[str] = None) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The candidate faces that can draw every class character.

    Returns:
        (kept, group, rejected): `kept` maps each kept face (file stem, in
        candidate order) to its path, `group` each kept face to its family
        group, `rejected` each other candidate to its reason.
    """
    folder = folder or font_dir()
    kept, group, rejected = {}, {}, {}
    for family, stems in CANDIDATE_FONTS.items():
        for stem in stems:
            path = os.path.join(folder, stem + ".ttf")
            problems = font_problems(path)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                rejected[stem] = problems[0] + more
            else:
                kept[stem], group[stem] = path, family
    return kept, group, rejected


# === One image ===
class _Base(NamedTuple):
    """A character's base rendering: the bitmap, its line box's centre (row, col), height and width."""

    bitmap: np.ndarray
    center: np.ndarray
    height: float
    width: float


@functools.lru_cache(maxsize=None)
def _base(path: str, ch: str, stroke: int) -> _Base:
    font = _font(path)
    bitmap, (x0, y0, x1, y1) = _draw(font, ch, stroke)
    _, cap_top, _, _ = font.getbbox("H", anchor="ls", stroke_width=stroke)
    # The line box: the character's ink and the capital band (cap top to baseline), in bitmap coordinates.
    top, bottom = min(y0, cap_top) - y0, max(y1, 0) - y0
    center = np.array([(top + bottom) / 2.0 - 0.5, (x1 - x0) / 2.0 - 0.5])
    return _Base(bitmap, center, float(bottom - top), float(x1 - x0))


def _bitmap(base: _Base, rng: np.random.Generator) -> np.ndarray:
    """The character as a 32x32 binary bitmap, transformed and elastically distorted."""
    n = BITMAP_SIZE
    fill = rng.uniform(*FILL)
    widen = np.exp(rng.uniform(*np.log(WIDEN)))
    scale = fill * n / max(base.height, base.width * widen)
    theta = np.deg2rad(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    shear = rng.uniform(-SHEAR, SHEAR)
    shift = rng.uniform(-1.0, 1.0, size=2) * (1.0 - fill) * n / 2.0
    # Forward map in (row, col): out = rotate @ shear @ scale @ (p - center) + bitmap centre + shift.
    cos, sin = np.cos(theta), np.sin(theta)
    forward = (
        np.array([[cos, -sin], [sin, cos]]) @ np.array([[1.0, 0.0], [shear, 1.0]]) @ np.diag([scale, scale * widen])
    )
    alpha = rng.uniform(*ELASTIC_ALPHA)
    field = rng.uniform(-1.0, 1.0, size=(2, n, n))
    displacement = np.stack([ndimage.gaussian_filter(f, ELASTIC_SIGMA, mode="constant") for f in field]) * alpha
    grid = np.mgrid[0:n, 0:n].astype(np.float64) + displacement - ((n - 1) / 2.0 + shift)[:, None, None]
    source = np.einsum("ij,jhw->ihw", np.linalg.inv(forward), grid) + base.center[:, None, None]
    return ndimage.map_coordinates(base.bitmap, source, order=1, cval=0.0, prefilter=False) > 0.5


def block_counts(bitmap: np.ndarray) -> np.ndarray:
    """UCI's reduction: on pixels in each non-overlapping 4x4 block of a 32x32 bitmap, an 8x8 array of 0..16."""
    k = BITMAP_SIZE // BLOCK
    return bitmap.reshape(k, BLOCK, k, BLOCK).sum(axis=(1, 3))


def _blocks(path: str, ch: str, rng: np.random.Generator) -> np.ndarray:
    """One character's 8x8 array (uint8, 0..16): bitmap, counts, blur and noise."""
    stroke = int(rng.choice(STROKE_WIDTHS))
    counts = block_counts(_bitmap(_base(path, ch, stroke), rng)).astype(np.float64)
    if rng.random() < BLUR_PROB:
        counts = ndimage.gaussian_filter(counts, rng.uniform(*BLUR_SIGMA), mode="constant")
    counts = counts + rng.normal(0.0, COUNT_NOISE, counts.shape)
    return np.clip(np.round(counts), 0, BLOCK * BLOCK).astype(np.uint8)


# === Splits ===
class Rendered(NamedTuple):
    """One split's images: uint8 [32, 32] images, class indices, font (file stem) and 8x8 arrays of each."""

    images: list
    labels: np.ndarray
    fonts: list
    blocks: np.ndarray


def _render_split(n: int, fonts: Sequence[str], paths: dict, glyph_sizes, rng: np.random.Generator) -> Rendered:
    """`n` images, classes and fonts balanced (each as even as `n` allows), in a seeded order."""
    labels = rng.permutation(np.arange(n) % NUM_CLASSES)
    font_of = [fonts[i] for i in rng.permutation(np.arange(n) % len(fonts))]
    images, blocks = [], np.zeros((n, 8, 8), np.uint8)
    for i, (c, font) in enumerate(zip(labels, font_of)):
        blocks[i] = _blocks(paths[font], CHARACTERS[c], rng)
        images.append(single_image(blocks[i].astype(np.float32), rng, glyph_sizes))
    return Rendered(images, labels, font_of, blocks)


def _check_sizes(sizes: dict[str, int], glyph_sizes) -> tuple[int, int]:
    for name, n in sizes.items():
        if n < 1:
            raise ConversionError(f"glyphs: num_{name} must be at least 1, got {n}")
    try:
        low, high = (int(v) for v in glyph_sizes)
    except (TypeError, ValueError):
        raise ConversionError(f"glyphs: glyph_sizes is two integers (smallest, largest), got {glyph_sizes!r}") from None
    if not 1 <= low <= high <= IMAGE_SIZE:
        raise ConversionError(
            f"glyphs: glyph_sizes must satisfy 1 <= smallest <= largest <= {IMAGE_SIZE} (the image side), "
            f"got {low},{high}"
        )
    return low, high


def _held_out(kept: dict, rejected: dict, names: Optional[Sequence[str]], rng: np.random.Generator) -> list[str]:
    """The held-out faces: `names` checked, or one face of each family group drawn from `rng`."""
    if names is None:
        families = [[s for s in stems if s in kept] for stems in CANDIDATE_FONTS.values()]
        held = [str(rng.choice(stems)) for stems in families if stems]
    else:
        held = []
        for name in names.split(",") if isinstance(names, str) else names:
            stem = name.strip().removesuffix(".ttf")
            if stem in rejected:
                raise ConversionError(f"glyphs: held-out font {stem!r} is not kept: {rejected[stem]}")
            if stem not in kept:
                raise ConversionError(f"glyphs: unknown held-out font {name!r}; the kept fonts: {', '.join(kept)}")
            if stem not in held:
                held.append(stem)
        if not held:
            raise ConversionError("glyphs: held_out_fonts names no font; give at least one (or None for the default)")
    if len(held) >= len(kept):
        raise ConversionError(f"glyphs: holding out {', '.join(held)} leaves no training fonts")
    return held


def build(
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
    glyph_sizes: Sequence[int] = DEFAULT_GLYPH_SIZES,
    held_out_fonts: Optional[Sequence[str]] = None,
) -> tuple[dict[str, Rendered], dict]:
    """Renders the images and labels of every split in memory.

    Args:
        seed: int. Every random choice derives from it. Defaults to 0.
        num_train, num_val, num_test: int. Split sizes; None gives
            `DEFAULT_SIZES` (40,000, 2,000, 4,000).
        glyph_sizes: two ints. Smallest and largest side (px, inclusive) of
            the 8x8 array drawn into the 32-px image. Defaults to (12, 28).
        held_out_fonts: sequence of str or None. Faces (file stems such as
            `DejaVuSerif-Bold`, `.ttf` optional) rendered only in `test`;
            None holds out one face of each family group, drawn from `seed`.

    Returns:
        (built, details): `built[name]` for name in train, val, test is a
        `Rendered`; `details` is the provenance (JSON-ready).

    Raises:
        ConversionError: a size below 1, glyph sizes outside 1..32, an
            unknown or rejected held-out font, or no training font left.
    """
    default = dict(zip(("train", "val", "test"), DEFAULT_SIZES))
    sizes = {name: default[name] if n is None else int(n) for name, n in zip(default, (num_train, num_val, num_test))}
    glyph_sizes = _check_sizes(sizes, glyph_sizes)
    kept, group, rejected = survey_fonts()
    if not kept:
        raise ConversionError(f"glyphs: no candidate font in {font_dir()} can draw every class character")
    held = _held_out(kept, rejected, held_out_fonts, _stream(seed, 0))
    train_fonts = [stem for stem in kept if stem not in held]
    test_fonts = [stem for stem in kept if stem in held]
    built = {
        "train": _render_split(sizes["train"], train_fonts, kept, glyph_sizes, _stream(seed, 1)),
        "val": _render_split(sizes["val"], train_fonts, kept, glyph_sizes, _stream(seed, 2)),
        "test": _render_split(sizes["test"], test_fonts, kept, glyph_sizes, _stream(seed, 3)),
    }
    import matplotlib

    details = {
        "seed": seed,
        "sizes": sizes,
        "num_classes": NUM_CLASSES,
        "classes_per_category": {
            cat: sum(1 for c in CLASSES if c[2] == cat) for cat in ("digit", "upper", "lower", "symbol")
        },
        "image_size": IMAGE_SIZE,
        "glyph_sizes": list(glyph_sizes),
        "matplotlib_version": matplotlib.__version__,
        "fonts": {"train": train_fonts, "test": test_fonts},
        "font_groups": {stem: group[stem] for stem in kept},
        "held_out_fonts_from": "seed" if held_out_fonts is None else "argument",
        "rejected_fonts": rejected,
        "transform": {
            "bitmap_size": BITMAP_SIZE,
            "block": BLOCK,
            "base_font_size": BASE_FONT_SIZE,
            "stroke_widths": list(STROKE_WIDTHS),
            "fill": list(FILL),
            "widen": list(WIDEN),
            "rotation_degrees": ROTATION_DEGREES,
            "shear": SHEAR,
            "elastic_sigma": ELASTIC_SIGMA,
            "elastic_alpha": list(ELASTIC_ALPHA),
            "blur_prob": BLUR_PROB,
            "blur_sigma": list(BLUR_SIGMA),
            "count_noise": COUNT_NOISE,
        },
    }
    return built, details


def convert(
    seed: int = 0,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
    glyph_sizes: Sequence[int] = DEFAULT_GLYPH_SIZES,
    held_out_fonts: Optional[Sequence[str]] = None,
) -> Conversion:
    """A glyphs dataset as a `Conversion` (arguments as `build`).

    Returns:
        A single-label `Conversion` of splits noisy, val and test; every
        record is fully verified and carries `label/true`, and its `origin`
        is `glyphs:<id>:<font>`.
    """
    built, details = build(seed, num_train, num_val, num_test, glyph_sizes, held_out_fonts)

    def items() -> Iterator[Record]:
        for name, split in (("train", "noisy"), ("val", "val"), ("test", "test")):
            rendered = built[name]
            for i, (image, c, font) in enumerate(zip(rendered.images, rendered.labels, rendered.fonts)):
                image_id = f"{name}-{i:06d}"
                label = [int(c)]
                yield Record(
                    split,
                    image_id,
                    noisy=label,
                    verified_pos=label,
                    verified_neg=complement(label, NUM_CLASSES),
                    true=label,
                    image_array=image,
                    origin=f"{SOURCE}:{image_id}:{font}",
                )

    return Conversion(
        classes=_classes(),
        multi_label=False,
        items=items(),
        source=SOURCE,
        total=sum(details["sizes"].values()),
        details=details,
    )
