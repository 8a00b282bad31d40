"""The `glyphs` source: printed characters rendered like the UCI digit scans."""

import functools
import os
import re

import numpy as np
import pytest
from cli_util import run_cli
from PIL import ImageFont

from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.data.schema import load_dataset_info
from tfrecords_tools import digits_mosaic, glyphs
from tfrecords_tools.records import ConversionError

SIZES = dict(num_train=120, num_val=30, num_test=60)


@functools.lru_cache(maxsize=None)
def _build(seed, held_out_fonts=None):
    return glyphs.build(seed, **SIZES, held_out_fonts=held_out_fonts)


def _assert_same(a, b):
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split].labels, b[split].labels)
        np.testing.assert_array_equal(a[split].blocks, b[split].blocks)
        np.testing.assert_array_equal(np.stack(a[split].images), np.stack(b[split].images))
        assert a[split].fonts == b[split].fonts


def test_deterministic_for_a_seed_and_different_for_another():
    a, details_a = _build(3)
    b, details_b = glyphs.build(3, **SIZES)
    _assert_same(a, b)
    assert details_a == details_b
    c, _ = _build(4)
    assert not np.array_equal(np.stack(a["train"].images), np.stack(c["train"].images))
    assert not np.array_equal(a["train"].labels, c["train"].labels)
    # Each split has its own stream: a larger training split leaves val and test as they were.
    d, _ = glyphs.build(3, num_train=150, num_val=30, num_test=60)
    np.testing.assert_array_equal(np.stack(a["test"].images), np.stack(d["test"].images))


@pytest.mark.parametrize("seed", [0, 1])
def test_held_out_fonts_appear_only_in_test(seed):
    built, details = _build(seed)
    held = set(details["fonts"]["test"])
    train = set(details["fonts"]["train"])
    assert len(held) == 3 and not held & train
    assert {details["font_groups"][f] for f in held} == {"DejaVu", "STIX", "Computer Modern"}
    for split in ("train", "val"):
        assert not set(built[split].fonts) & held, split
        assert set(built[split].fonts) == train  # every training font is used (balanced)
    assert set(built["test"].fonts) == held
    # Named held-out faces.
    built, details = _build(seed, ("cmtt10", "DejaVuSerif-Bold.ttf"))
    assert details["fonts"]["test"] == ["DejaVuSerif-Bold", "cmtt10"]  # in candidate order
    assert set(built["test"].fonts) == {"DejaVuSerif-Bold", "cmtt10"}
    assert not {"DejaVuSerif-Bold", "cmtt10"} & set(built["train"].fonts + built["val"].fonts)


def _mask(font, ch):
    mask = font.getmask(ch)
    return mask.size, bytes(mask)


def test_every_class_of_every_kept_font_renders_and_is_not_notdef():
    kept, group, rejected = glyphs.survey_fonts()
    assert 18 <= len(kept) <= 24, list(kept)
    assert set(group.values()) == {"DejaVu", "STIX", "Computer Modern"}
    # Faces that map the ASCII characters elsewhere are left out, with their reason.
    assert "cmmi10" in rejected and "STIXNonUni" in rejected
    for path in kept.values():
        font = ImageFont.truetype(path, 40)
        notdef = {_mask(font, probe) for probe in glyphs.NOTDEF_PROBES}
        for ch in glyphs.CHARACTERS:
            size, pixels = _mask(font, ch)
            assert size[0] * size[1] > 0 and any(pixels), (path, ch)
            assert (size, pixels) not in notdef, (path, ch)
    # The check itself rejects a character a font does not draw as itself.
    assert glyphs.font_problems(os.path.join(glyphs.font_dir(), "cmsy10.ttf"))
    assert glyphs.font_problems(os.path.join(glyphs.font_dir(), "no_such_font.ttf")) == ("file not found",)


def test_classes():
    names = [name for _, name, _ in glyphs.CLASSES]
    assert tuple(names[:10]) == digits_mosaic.CLASS_NAMES
    assert len(set(names)) == len(names) == glyphs.NUM_CLASSES
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", name) for name in names)
    assert len(set(glyphs.CHARACTERS)) == glyphs.NUM_CLASSES
    categories = [category for _, _, category in glyphs.CLASSES]
    assert {c: categories.count(c) for c in set(categories)} == {"digit": 10, "upper": 26, "lower": 26, "symbol": 14}
    assert [glyphs.CHARACTERS[names.index(n)] for n in ("zero", "nine", "upper_A", "lower_z", "plus")] == list("09Az+")


def test_images_are_uci_block_counts_drawn_like_digits_mosaic():
    built, details = _build(0)
    for split in ("train", "val", "test"):
        blocks = built[split].blocks
        assert blocks.shape == (len(built[split].images), 8, 8) and blocks.dtype == np.uint8
        assert blocks.min() == 0 and blocks.max() <= 16
        assert all(b.sum() >= 8 for b in blocks)  # every character leaves ink
        assert all(im.shape == (32, 32) and im.dtype == np.uint8 for im in built[split].images)
        counts = np.bincount(built[split].labels, minlength=glyphs.NUM_CLASSES)
        assert counts.max() - counts.min() <= 1  # balanced
    # The reduction is UCI's: on pixels per 4x4 block.
    bitmap = np.zeros((32, 32), bool)
    bitmap[:4, :4] = True
    bitmap[4:6, 28:32] = True
    expected = np.zeros((8, 8), int)
    expected[0, 0], expected[1, 7] = 16, 8
    np.testing.assert_array_equal(glyphs.block_counts(bitmap), expected)
    # The image is digits_mosaic's rendering of the 8x8 array, from the same stream.
    rng = np.random.default_rng(7)
    image = digits_mosaic.single_image(built["train"].blocks[0].astype(np.float32), rng, (12, 28))
    assert image.shape == (32, 32) and image.dtype == np.uint8
    assert details["glyph_sizes"] == [12, 28] and details["sizes"] == {"train": 120, "val": 30, "test": 60}


def test_bad_parameters_raise_conversion_errors():
    cases = [
        (dict(held_out_fonts=("NoSuchSans",)), "unknown held-out font 'NoSuchSans'"),
        (dict(held_out_fonts=("cmmi10",)), "held-out font 'cmmi10' is not kept"),
        (dict(held_out_fonts=()), "names no font"),
        (dict(held_out_fonts=tuple(glyphs.survey_fonts()[0])), "leaves no training fonts"),
        (dict(glyph_sizes=(12, 40)), "glyph_sizes must satisfy"),
        (dict(glyph_sizes=(0, 20)), "glyph_sizes must satisfy"),
        (dict(glyph_sizes=(20, 12)), "glyph_sizes must satisfy"),
        (dict(glyph_sizes=(12,)), "glyph_sizes is two integers"),
        (dict(glyph_sizes=("a", "b")), "glyph_sizes is two integers"),
        (dict(num_train=0), "num_train must be at least 1"),
        (dict(num_test=-5), "num_test must be at least 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConversionError, match=re.escape(message)):
            glyphs.convert(**{**dict(num_train=10, num_val=10, num_test=10), **kwargs})


def test_binary_writes_the_dataset(tmp_path):
    out = tmp_path / "glyphs"
    proc = run_cli(
        "make_tfrecords",
        "--source=glyphs",
        "--num_train=152",
        "--num_val=20",
        "--num_test=40",
        "--seed=2",
        "--glyph_sizes=14,26",
        "--held_out_fonts=DejaVuSans-Oblique,STIXGeneralBol,cmb10",
        "--num_shards=2",
        f"--output_dir={out}",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    info = load_dataset_info(str(out))
    assert {s: v.num_records for s, v in info.splits.items()} == {"noisy": 152, "val": 20, "test": 40}
    assert info.num_classes == glyphs.NUM_CLASSES and not info.multi_label
    assert info.class_names[:10] == list(digits_mosaic.CLASS_NAMES)
    assert [c.category for c in info.classes[9:11]] == ["digit", "upper"]
    details = info.provenance["details"]
    assert info.provenance["source"] == "glyphs"
    assert details["fonts"]["test"] == ["DejaVuSans-Oblique", "STIXGeneralBol", "cmb10"]
    assert details["glyph_sizes"] == [14, 26] and details["seed"] == 2
    for split in ("noisy", "val", "test"):
        records = list(iterate_label_lists(info.split_files(split)))
        for r in records:
            assert len(r["true"]) == 1 and r["noisy"] == r["verified_pos"] == r["true"]
            assert sorted(r["verified_pos"] + r["verified_neg"]) == list(range(glyphs.NUM_CLASSES))
        counts = np.bincount([r["true"][0] for r in records], minlength=glyphs.NUM_CLASSES)
        assert counts.max() - counts.min() <= 1

    proc = run_cli("make_tfrecords", "--source=glyphs", "--held_out_fonts=Comic", f"--output_dir={tmp_path / 'bad'}")
    assert proc.returncode == 1 and "unknown held-out font 'Comic'" in proc.stderr
    assert not (tmp_path / "bad").exists()
