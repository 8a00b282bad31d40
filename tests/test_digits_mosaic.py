"""The built-in digits_mosaic benchmark data and nlr-inspect."""

import json

import numpy as np
import pytest
from cli_util import run_cli
from sklearn.datasets import load_digits

from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.data.schema import load_dataset_info
from tfrecords_tools import digits_mosaic
from tfrecords_tools.stats import LabelStats


def _stats(built, name):
    stats = LabelStats(digits_mosaic.NUM_CLASSES)
    _, true, noisy, _ = built[name]
    for t, y in zip(true, noisy):
        stats.add(y, true=t)
    return stats.summary()


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_label_noise_is_in_the_specified_ranges(seed):
    built, _, details = digits_mosaic.build("multi_label", 0.1, seed)
    for name in ("train", "test"):
        s = _stats(built, name)
        assert 0.20 <= s["false_annotation_share"] <= 0.35, (name, s)
        assert 0.15 <= s["missed_label_share"] <= 0.30, (name, s)
    _, true, _, picks = built["train"]
    assert {len(p) for p in picks} == {1, 2, 3, 4}
    assert all(1 <= len(t) <= 4 for t in true)


def test_multi_label_noise_is_structured_not_uniform():
    built, _, _ = digits_mosaic.build("multi_label", 0.1, 0)
    _, true, noisy, _ = built["train"]
    confusion = np.zeros((10, 10))
    for t, y in zip(true, noisy):
        for wrong in set(y) - set(t):
            for c in t:
                confusion[c, wrong] += 1
    # Each class's false labels concentrate on a few classes: the top two
    # confusions carry far more than the 2/9 a uniform flip would give.
    top2 = np.sort(confusion, axis=1)[:, -2:].sum(axis=1) / confusion.sum(axis=1)
    assert np.median(top2) > 0.45
    quality = []
    for c in range(10):
        labeled = [c in t for t, y in zip(true, noisy) if c in y]
        quality.append(np.mean(labeled))
    assert max(quality) - min(quality) > 0.25  # annotation quality differs by class


@pytest.mark.parametrize("seed", [0, 1])
def test_single_label_noise_is_in_the_specified_range(seed):
    built, _, details = digits_mosaic.build("single_label", 0.1, seed)
    s = _stats(built, "train")
    assert 0.35 <= s["false_annotation_share"] <= 0.40, s
    transition = np.asarray(details["transition_matrix"])
    np.testing.assert_allclose(transition.sum(axis=1), 1.0, atol=1e-3)  # rounded to 4 places
    off = transition - np.diag(np.diag(transition))
    top2 = np.sort(off, axis=1)[:, -2:].sum(axis=1) / off.sum(axis=1)
    assert np.median(top2) > 0.5 and top2.min() > 2 * (2 / 9)  # uniform flips would give 2/9


def test_test_images_use_digits_never_used_in_training_images():
    targets = load_digits().target
    pools = digits_mosaic._split_pools(targets, np.random.default_rng(0))
    for a in pools:
        for b in pools:
            if a < b:
                assert not set(pools[a]) & set(pools[b]), (a, b)
    for variant in digits_mosaic.VARIANTS:
        built, _, _ = digits_mosaic.build(variant, 0.1, 0, num_train=500, num_val=100, num_test=100)
        used = {name: set(np.concatenate(built[name][3]).tolist()) for name in ("train", "val", "test")}
        assert not used["train"] & used["test"] and not used["train"] & used["val"]


def test_deterministic_and_clean_sets_nested():
    a, clean5, _ = digits_mosaic.build("multi_label", 0.05, 3, num_train=400, num_val=50, num_test=50)
    b, clean10, _ = digits_mosaic.build("multi_label", 0.10, 3, num_train=400, num_val=50, num_test=50)
    assert len(clean5) == 20 and len(clean10) == 40 and clean5 <= clean10
    assert a["train"][2] == b["train"][2] and a["test"][1] == b["test"][1]
    np.testing.assert_array_equal(a["train"][0][7], b["train"][0][7])
    c, _, _ = digits_mosaic.build("multi_label", 0.10, 4, num_train=400, num_val=50, num_test=50)
    assert a["train"][2] != c["train"][2]


def test_nested_clean_splits_equal_the_clean_split_at_that_fraction(tmp_path):
    from tfrecords_tools.writer import write_dataset

    sizes = dict(num_train=200, num_val=20, num_test=20)
    both = write_dataset(
        digits_mosaic.convert("single_label", 0.05, 2, nested_fractions=(0.05, 0.1), **sizes),
        str(tmp_path / "nested"),
        progress=False,
    )
    at10 = write_dataset(digits_mosaic.convert("single_label", 0.1, 2, **sizes), str(tmp_path / "at10"), progress=False)

    def records(info, split):
        return sorted((r["id"], r["noisy"], r["verified_pos"]) for r in iterate_label_lists(info.split_files(split)))

    assert both.splits["clean_05"].num_records == 10 and both.splits["clean_10"].num_records == 20
    assert records(both, "clean_05") == records(both, "clean")
    assert records(both, "clean_10") == records(at10, "clean")
    assert records(both, "noisy") == records(at10, "noisy")
    with pytest.raises(ValueError, match="nested clean fractions"):
        digits_mosaic.convert("single_label", 0.1, 2, nested_fractions=(1.5,), **sizes)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown digits_mosaic variant"):
        digits_mosaic.convert("three_label")
    with pytest.raises(ValueError, match="clean_fraction"):
        digits_mosaic.convert(clean_fraction=0.0)


def test_binary_builds_and_inspect_reports(tmp_path):
    out = tmp_path / "ml10"
    proc = run_cli(
        "make_tfrecords",
        "--source=digits_mosaic",
        "--variant=multi_label",
        "--clean_fraction=0.1",
        "--num_train=600",
        "--num_val=100",
        "--num_test=200",
        "--num_shards=2",
        f"--output_dir={out}",
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    info = load_dataset_info(str(out))
    assert {s: v.num_records for s, v in info.splits.items()} == {
        "noisy": 600,
        "clean": 60,
        "clean_all": 600,
        "val": 100,
        "test": 200,
    }
    assert info.provenance["source"] == "digits_mosaic" and info.multi_label
    noisy = list(iterate_label_lists(info.split_files("noisy")))
    assert all(r["true"] and not r["verified_pos"] and not r["verified_neg"] for r in noisy)
    clean = list(iterate_label_lists(info.split_files("clean")))
    assert all(sorted(r["verified_pos"] + r["verified_neg"]) == list(range(10)) for r in clean)
    assert {r["id"] for r in clean} <= {r["id"] for r in noisy}

    proc = run_cli("inspect_dataset", str(out), f"--output_json={tmp_path / 'stats.json'}")
    assert proc.returncode == 0, proc.stderr
    assert "false %" in proc.stdout and "per class, split noisy:" in proc.stdout
    report = json.loads((tmp_path / "stats.json").read_text())
    summary = report["splits"]["noisy"]["summary"]
    assert summary["num_records"] == 600 and summary["records_with_truth"] == 600
    assert 0.15 <= summary["false_annotation_share"] <= 0.40
    assert len(report["splits"]["clean"]["per_class"]) == 10
    # Against verified labels (no truth) the clean split gives the same shares.
    assert (
        report["splits"]["clean"]["summary"]["noisy_annotations_judged"]
        == report["splits"]["clean"]["summary"]["noisy_annotations"]
    )

    proc = run_cli("inspect_dataset", str(tmp_path / "nothing"))
    assert proc.returncode == 1 and "dataset folder not found" in proc.stderr
