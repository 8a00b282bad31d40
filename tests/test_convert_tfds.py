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
