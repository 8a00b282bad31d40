"""TFDS converter on a tiny dataset prepared on disk, and on tfds mock data."""

import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from cli_util import run_cli

from nlr_tf.data.parsing import iterate_label_lists
from tfrecords_tools import tfds_source
from tfrecords_tools.records import ConversionError
from tfrecords_tools.writer import BadInputError, write_dataset

NAMES = ["zero", "one", "two", "three"]
TAGS = ["sky", "tree", "car"]
SIZES = {"train": 8, "test": 3}


def label(split, i):
    return -1 if (split, i) == ("test", 1) else i % 4


def noisy_label(i):
    return (i + 1) % 4 if i % 3 == 0 else i % 4


def tags(i):
    return sorted({i % 3, (2 * i + 1) % 3})


class TinyTagged(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Images with a clean label, a noisy label and multi-label tags."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=NAMES),
                "noisy_label": tfds.features.ClassLabel(names=NAMES),
                "tags": tfds.features.Sequence(tfds.features.ClassLabel(names=TAGS)),
                "caption": tfds.features.Text(),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SIZES}

    def _generate_examples(self, split):
        for i in range(SIZES[split]):
            image = np.full((4 + i % 2, 5, 3), 20 * i, np.uint8)
            yield (
                f"{i:04d}",
                {
                    "image": image,
                    "label": label(split, i),
                    "noisy_label": noisy_label(i),
                    "tags": tags(i),
                    "caption": f"image {i}",
                },
            )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tfds")
    TinyTagged(data_dir=str(path)).download_and_prepare()
    return str(path)


def tfds_id(split, i):
    return f"tiny_tagged-{split}.tfrecord-00000-of-00001__{i}"


def _read(info, split):
    return {
        r["id"]: (r["noisy"], r["verified_pos"], r["verified_neg"])
        for r in iterate_label_lists(info.split_files(split))
    }


def _verified(pos, num_classes):
    return list(pos), [c for c in range(num_classes) if c not in pos]


def test_single_label_with_noisy_feature(tmp_path, data_dir):
    conversion = tfds_source.convert(
        "tiny_tagged", "noisy=train[:6],clean=train[6:],test=test", data_dir=data_dir, noisy_label_key="noisy_label"
    )
    assert not conversion.multi_label and conversion.total == 11
    assert [c.name for c in conversion.classes] == NAMES
    test_id = re.escape("tfds:tiny_tagged/test:1: label -1 is not a class index 0..3")
    with pytest.raises(BadInputError, match=test_id):
        write_dataset(conversion, str(tmp_path / "out"), progress=False)
    conversion = tfds_source.convert(
        "tiny_tagged", "noisy=train[:6],clean=train[6:],test=test", data_dir=data_dir, noisy_label_key="noisy_label"
    )
    info = write_dataset(conversion, str(tmp_path / "out"), num_shards=2, skip_bad=True, progress=False)
    assert info.skipped["count"] == 1
    assert _read(info, "noisy") == {tfds_id("train", i): ([noisy_label(i)], [], []) for i in range(6)}
    assert _read(info, "clean") == {tfds_id("train", i): ([noisy_label(i)], *_verified([i % 4], 4)) for i in (6, 7)}
    assert _read(info, "test") == {tfds_id("test", i): ([noisy_label(i)], *_verified([i % 4], 4)) for i in (0, 2)}
    assert info.provenance["details"]["split_map"] == {"noisy": "train[:6]", "clean": "train[6:]", "test": "test"}


def test_multi_label_sequence_feature(tmp_path, data_dir):
    conversion = tfds_source.convert("tiny_tagged", "noisy=train, val=test", data_dir=data_dir, label_key="tags")
    assert conversion.multi_label
    info = write_dataset(conversion, str(tmp_path / "out"), progress=False)
    assert info.class_names == TAGS
    assert _read(info, "noisy") == {tfds_id("train", i): (tags(i), [], []) for i in range(8)}
    assert _read(info, "val") == {tfds_id("test", i): ([], *_verified(tags(i), 3)) for i in range(3)}


def test_whole_input_problems(tmp_path, data_dir):
    with pytest.raises(ConversionError, match=r"not prepared in .*tfds build mnist"):
        tfds_source.convert("mnist", "noisy=train", data_dir=str(tmp_path / "empty"))
    with pytest.raises(ConversionError, match="has no dataset 'no_such_dataset_xyz'"):
        tfds_source.convert("no_such_dataset_xyz", "noisy=train", data_dir=str(tmp_path / "empty"))
    with pytest.raises(
        ConversionError, match="has no feature 'picture'; it has: caption, image, label, noisy_label, tags"
    ):
        tfds_source.convert("tiny_tagged", "noisy=train", data_dir=data_dir, image_key="picture")
    with pytest.raises(ConversionError, match="'caption' is a Text, not a ClassLabel"):
        tfds_source.convert("tiny_tagged", "noisy=train", data_dir=data_dir, label_key="caption")
    with pytest.raises(ConversionError, match="bad split 'validation'"):
        tfds_source.convert("tiny_tagged", "noisy=train,val=validation", data_dir=data_dir)
    with pytest.raises(ConversionError, match="entries look like"):
        tfds_source.convert("tiny_tagged", "noisy:train", data_dir=data_dir)
    with pytest.raises(ConversionError, match="appears twice"):
        tfds_source.convert("tiny_tagged", "noisy=train,noisy=test", data_dir=data_dir)


@pytest.mark.parametrize(
    "name,label_key,num_classes,multi_label",
    [("mnist", "label", 10, False), ("voc/2007", "labels", 20, True), ("cifar10_n", "label", 10, False)],
)
def test_mock_data(tmp_path, name, label_key, num_classes, multi_label):
    noisy_key = "worse_label" if name == "cifar10_n" else None
    with tfds.testing.mock_data(num_examples=4):
        conversion = tfds_source.convert(
            name, "noisy=train,test=test", label_key=label_key, noisy_label_key=noisy_key, data_dir=str(tmp_path / "d")
        )
        info = write_dataset(conversion, str(tmp_path / "out"), progress=False)
    assert info.multi_label == multi_label and info.num_classes == num_classes
    assert {s: info.splits[s].num_records for s in info.splits} == {"noisy": 4, "test": 4}
    for r in iterate_label_lists(info.split_files("test")):
        assert sorted(r["verified_pos"] + r["verified_neg"]) == list(range(num_classes))
        assert len(r["noisy"]) == (1 if noisy_key else 0)


def test_cli(tmp_path, data_dir):
    out = tmp_path / "out"
    result = run_cli(
        "make_tfrecords",
        "--source=tfds",
        "--tfds_name=tiny_tagged",
        f"--tfds_data_dir={data_dir}",
        "--tfds_split_map=noisy=train[:6],clean=train[6:],test=test",
        "--tfds_noisy_label_key=noisy_label",
        "--skip_bad",
        f"--output_dir={out}",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: 4 classes, clean=2, noisy=6, test=2; 1 bad rows skipped" in result.stdout


# === Noisy-label datasets, over their real builders' feature specs ===
def _fake_split(features, n: int, split: str, overrides):
    """`n` examples of a builder's own feature spec (images PNG-encoded, as SkipDecoding reads them), with
    `overrides(split, i, example)` setting the values a test needs."""
    import tensorflow as tf

    def spec(f):
        if isinstance(f, (tfds.features.Image, tfds.features.Text)):
            return tf.TensorSpec([], tf.string)
        if isinstance(f, tfds.features.Sequence):
            return tf.TensorSpec([None], tf.int64)
        if isinstance(f, tfds.features.ClassLabel):
            return tf.TensorSpec([], tf.int64)
        return tf.TensorSpec(f.shape, tf.as_dtype(f.np_dtype))

    def value(f, rng):
        if isinstance(f, tfds.features.Image):
            side = [s or 8 for s in f.shape]
            return tf.io.encode_png(rng.integers(0, 256, side, dtype=np.uint8)).numpy()
        if isinstance(f, tfds.features.Text):
            return b"text"
        if isinstance(f, tfds.features.Sequence):
            return np.unique(rng.integers(0, f.feature.num_classes, 2)).astype(np.int64)
        if isinstance(f, tfds.features.ClassLabel):
            return np.int64(rng.integers(0, f.num_classes))
        if np.dtype(f.np_dtype) == np.bool_:
            return np.bool_(rng.random() < 0.5)
        return np.zeros(f.shape, f.np_dtype)

    def examples():
        rng = np.random.default_rng(0)
        for i in range(n):
            example = {k: value(f, rng) for k, f in features.items()}
            overrides(split, i, example)
            yield {**example, "tfds_id": f"{split}/{i}".encode()}

    signature = {k: spec(f) for k, f in features.items()} | {"tfds_id": tf.TensorSpec([], tf.string)}
    return tf.data.Dataset.from_generator(examples, output_signature=signature)


def _mocked(overrides, n=6):
    def as_dataset(self, split, **kwargs):
        return _fake_split(self.info.features, n, str(split), overrides)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def _converted(out, overrides, name, split_map, skip_bad=False, **keys):
    """The dataset `tfds_source.convert(name, split_map, **keys)` writes at `out` from mocked examples."""
    with _mocked(overrides):
        conversion = tfds_source.convert(name, split_map, data_dir=str(out.parent / "tfds"), **keys)
        return write_dataset(conversion, str(out), skip_bad=skip_bad, progress=False)


def test_cifar10_n_test_images_keep_their_labels_without_a_noisy_one(tmp_path):
    def overrides(split, i, example):  # as cifar10_n stores them: -1, the noisy label of every test image
        if split == "test":
            example["worse_label"] = np.int64(-1)

    info = _converted(tmp_path / "out", overrides, "cifar10_n", "noisy=train,test=test", noisy_label_key="worse_label")
    assert not info.multi_label and info.splits["test"].num_records == 6 and info.splits["noisy"].num_records == 6
    for r in iterate_label_lists(info.split_files("test")):
        assert r["noisy"] == [] and len(r["verified_pos"]) == 1 and len(r["verified_neg"]) == 9
    # In the noisy split, where the noisy label is what trains, a -1 is a bad row (counted with --skip_bad).
    def noisy_missing(split, i, example):
        if split == "train" and i < 2:
            example["worse_label"] = np.int64(-1)

    info = _converted(
        tmp_path / "out2", noisy_missing, "cifar10_n", "noisy=train", skip_bad=True, noisy_label_key="worse_label"
    )
    assert info.splits["noisy"].num_records == 4 and info.skipped["count"] == 2


def test_imagenet2012_multilabel_verifies_the_correct_and_wrong_labels_only(tmp_path):
    def overrides(split, i, example):
        example["correct_multi_labels"] = np.array([i, i + 1], np.int64)
        example["wrong_multi_labels"] = np.array([500 + i], np.int64)
        example["original_label"] = np.int64(i + 1)

    info = _converted(
        tmp_path / "out",
        overrides,
        "imagenet2012_multilabel",
        "clean=validation,test=validation",
        label_key="correct_multi_labels",
        verified_neg_key="wrong_multi_labels",
        noisy_label_key="original_label",
    )
    assert info.multi_label and info.num_classes == 1000
    records = {r["id"]: r for r in iterate_label_lists(info.split_files("clean"))}
    for i in range(6):  # partial verification: the classes named by neither feature stay unverified
        r = records[f"validation/{i}"]
        assert (r["verified_pos"], r["verified_neg"], r["noisy"]) == ([i, i + 1], [500 + i], [i + 1])


def test_imagenet_pi_annotators_give_one_noisy_label_by_majority(tmp_path):
    def overrides(split, i, example):  # 16 annotators: class 7 three times, class 2 twice, the rest no label
        example["annotator_labels"] = np.array([7, 2, 7, 2, 7] + [-1] * 11, np.int64)
        example["clean_label"] = np.int64(7 if i % 2 else 2)

    info = _converted(
        tmp_path / "out",
        overrides,
        "imagenet_pi",
        "noisy=train,val=validation",
        label_key="clean_label",
        noisy_label_key="annotator_labels",
    )
    assert not info.multi_label  # a tensor of annotators' labels does not make the dataset multi-label
    assert {tuple(r["noisy"]) for r in iterate_label_lists(info.split_files("noisy"))} == {(7,)}
    assert {tuple(r["verified_pos"]) for r in iterate_label_lists(info.split_files("val"))} == {(2,), (7,)}


def test_controlled_noisy_web_labels_clean_flag_makes_the_clean_split(tmp_path):
    def overrides(split, i, example):
        example["is_clean"] = np.bool_(i % 3 == 0)

    name = "controlled_noisy_web_labels/mini_imagenet_red"
    info = _converted(tmp_path / "out", overrides, name, "noisy=train_20,val=validation", clean_flag_key="is_clean")
    assert {s: info.splits[s].num_records for s in info.splits} == {"noisy": 4, "clean": 2, "val": 6}
    for r in iterate_label_lists(info.split_files("clean")):
        assert r["noisy"] == r["verified_pos"] and len(r["verified_neg"]) == 99
    with pytest.raises(ConversionError, match="boolean feature"), _mocked(overrides):
        tfds_source.convert(name, "noisy=train_20", clean_flag_key="label", data_dir=str(tmp_path / "d"))


def test_a_manual_download_is_prepared_from_its_folder_or_refused_in_one_line(tmp_path):
    (tmp_path / "manual").mkdir()
    # ImageNet's files come only by hand (CIFAR-N's labels too, its images from the web): nothing is downloaded.
    match = r"cannot prepare the TFDS dataset 'imagenet2012_multilabel' from the files in .*: Manual directory"
    with pytest.raises(ConversionError, match=match):
        tfds_source.convert(
            "imagenet2012_multilabel",
            "test=validation",
            label_key="correct_multi_labels",
            manual_dir=str(tmp_path / "manual"),
            data_dir=str(tmp_path / "d"),
        )
