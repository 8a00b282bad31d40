"""The built-in digits_mosaic benchmark data and nlr-inspect."""

import functools
import json

import numpy as np
import pytest
from cli_util import run_cli
from sklearn.datasets import load_digits

from nlr_tf.data.label_stats import LabelStats
from nlr_tf.data.parsing import iterate_label_lists
from nlr_tf.data.schema import load_dataset_info
from tfrecords_tools import digits_mosaic


@functools.lru_cache(maxsize=None)
def _build(variant, clean_fraction, seed, num_train=None, num_val=None, num_test=None, nested_fractions=()):
    """`digits_mosaic.build`, cached: several tests read the same default-size dataset."""
    return digits_mosaic.build(variant, clean_fraction, seed, num_train, num_val, num_test, nested_fractions)


def _stats(built, name):
    stats = LabelStats(digits_mosaic.NUM_CLASSES)
    _, true, noisy, _ = built[name]
    for t, y in zip(true, noisy):
        stats.add(y, true=t)
    return stats.summary()


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_label_noise_is_in_the_specified_ranges(seed):
    built, _, details = _build("multi_label", 0.1, seed)
    for name in ("train", "test"):
        s = _stats(built, name)
        assert 0.20 <= s["false_annotation_share"] <= 0.35, (name, s)
        assert 0.15 <= s["missed_label_share"] <= 0.30, (name, s)
    _, true, _, picks = built["train"]
    assert {len(p) for p in picks} == {1, 2, 3, 4}
    assert all(1 <= len(t) <= 4 for t in true)


def test_multi_label_noise_is_structured_not_uniform():
    built, _, _ = _build("multi_label", 0.1, 0)
    _, true, noisy, _ = built["train"]
    confusion = np.zeros((10, 10))
    for t, y in zip(true, noisy):
        for wrong in set(y) - set(t):
            for c in t:
                confusion[c, wrong] += 1
    # nlr-inspect's confusion counts are the same pairs.
    stats = LabelStats(digits_mosaic.NUM_CLASSES)
    for t, y in zip(true, noisy):
        stats.add(y, true=t)
    np.testing.assert_array_equal(stats.false_given_true, confusion)
    names = [str(c) for c in range(10)]
    top = stats.confusions(names, top=3)
    assert [c["count"] for c in top] == sorted(confusion.ravel())[::-1][:3]
    assert int(top[0]["true"]) != int(top[0]["noisy"])
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
    built, _, details = _build("single_label", 0.1, seed)
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
    every = write_dataset(
        digits_mosaic.convert("single_label", 0.2, 2, nested_fractions=digits_mosaic.CLEAN_FRACTIONS, **sizes),
        str(tmp_path / "every"),
        progress=False,
    )

    def records(info, split):
        return sorted((r["id"], r["noisy"], r["verified_pos"]) for r in iterate_label_lists(info.split_files(split)))

    assert both.splits["clean_05"].num_records == 10 and both.splits["clean_10"].num_records == 20
    assert records(both, "clean_05") == records(both, "clean")
    assert records(both, "clean_10") == records(at10, "clean")
    assert records(both, "noisy") == records(at10, "noisy") == records(every, "noisy")
    for name in ("clean_05", "clean_10"):
        assert records(every, name) == records(both, name)
    assert {s: every.splits[s].num_records for s in ("clean_01", "clean_02", "clean_20")} == {
        "clean_01": 2,
        "clean_02": 4,
        "clean_20": 40,
    }
    with pytest.raises(ValueError, match="nested clean fractions"):
        digits_mosaic.convert("single_label", 0.1, 2, nested_fractions=(1.5,), **sizes)


def test_clean_fraction_alone_builds_the_images_of_the_whole_ladder():
    # The ladder always holds CLEAN_FRACTIONS: clean_fraction=0.05 alone gives
    # the images (not only the labels) of a dataset with every clean split.
    sizes = dict(num_train=300, num_val=20, num_test=20)
    for variant in digits_mosaic.VARIANTS:
        a, clean5, da = digits_mosaic.build(variant, 0.05, 5, **sizes)
        b, _, db = digits_mosaic.build(variant, 0.2, 5, **sizes, nested_fractions=digits_mosaic.CLEAN_FRACTIONS)
        assert da["clean_ladder"] == db["clean_ladder"] == list(digits_mosaic.CLEAN_FRACTIONS)
        assert clean5 == set(db["clean_order"][:15].tolist())
        for split in ("train", "val", "test"):
            assert a[split][1:3] == b[split][1:3]
            np.testing.assert_array_equal(np.concatenate(a[split][3]), np.concatenate(b[split][3]))
            for x, y in zip(a[split][0], b[split][0]):
                np.testing.assert_array_equal(x, y)
    # Another fraction adds a rung: the clean sets below it keep their images.
    b, _, db = digits_mosaic.build("multi_label", 0.2, 5, **sizes, nested_fractions=digits_mosaic.CLEAN_FRACTIONS)
    c, clean30, dc = digits_mosaic.build("multi_label", 0.3, 5, **sizes)
    assert dc["clean_ladder"] == [*digits_mosaic.CLEAN_FRACTIONS, 0.3] and len(clean30) == 90
    clean20 = db["clean_order"][:60]
    np.testing.assert_array_equal(dc["clean_order"][:60], clean20)
    assert [c["train"][2][i] for i in clean20] == [b["train"][2][i] for i in clean20]
    assert dc["scan_pools"]["noisy_only"] < db["scan_pools"]["noisy_only"]


def _clean_sets(details, num_train):
    """Training image indices of each ladder fraction's clean set, by split name."""
    order = details["clean_order"]
    return {
        digits_mosaic.nested_split_name(f): set(order[: max(1, int(round(f * num_train)))].tolist())
        for f in details["clean_ladder"]
    }


@pytest.mark.parametrize("variant", digits_mosaic.VARIANTS)
def test_clean_images_use_only_their_pool_and_noisy_only_images_none(variant):
    num_train = 1000
    built, clean, details = digits_mosaic.build(variant, 0.05, 1, num_train=num_train, num_val=50, num_test=50)
    picks = built["train"][3]
    pools = {name: set(scans.tolist()) for name, scans in details["clean_pool_scans"].items()}
    sets = _clean_sets(details, num_train)
    assert list(sets) == ["clean_01", "clean_02", "clean_05", "clean_10", "clean_20"]
    assert sets["clean_05"] == clean
    names = list(sets)
    for small, large in zip(names, names[1:]):
        assert sets[small] < sets[large]  # (d) nested clean sets
        assert pools[small] < pools[large]  # nested pools
    for name, ids in sets.items():
        used = set(np.concatenate([picks[i] for i in ids]).tolist())
        assert used <= pools[name], name  # (a) only scans of its pool
        assert len(ids) == details["clean_images"][name] == round(int(name[-2:]) / 100 * num_train)
    noisy_only = set(range(num_train)) - sets["clean_20"]
    used = set(np.concatenate([picks[i] for i in noisy_only]).tolist())
    assert not used & pools["clean_20"]  # (c) disjoint from the largest pool
    assert used <= set(np.concatenate(picks).tolist())
    # Clean images sit at seeded positions, not at the start of the ids.
    assert min(sets["clean_05"]) < num_train // 4 and max(sets["clean_05"]) > 3 * num_train // 4


def test_clean_pools_are_nested_and_stratified():
    targets = load_digits().target
    train = digits_mosaic._split_pools(targets, np.random.default_rng(0))["train"]
    _, _, details = _build("multi_label", 0.1, 0)
    per_class_total = np.bincount(targets[train], minlength=10)
    previous = set()
    for f in digits_mosaic.CLEAN_FRACTIONS:
        scans = details["clean_pool_scans"][digits_mosaic.nested_split_name(f)]
        assert set(scans.tolist()) <= set(train.tolist()) and previous <= set(scans.tolist())
        previous = set(scans.tolist())
        counts = np.bincount(targets[scans], minlength=10)
        assert counts.min() >= 1  # every class in every pool
        np.testing.assert_array_equal(counts, np.maximum(1, np.round(f * per_class_total)))
        assert abs(len(scans) / len(train) - f) <= 0.01, (f, len(scans))
    # The pools do not depend on the variant.
    _, _, single = _build("single_label", 0.1, 0)
    for name, scans in details["clean_pool_scans"].items():
        np.testing.assert_array_equal(single["clean_pool_scans"][name], scans)


def test_five_percent_clean_set_shows_five_percent_of_the_scans():
    # (f) With mosaics reusing ~1,060 scans across 12,000 images, a random 5 %
    # of the images would show ~3/4 of the training scans; the clean set
    # shows only its pool's.
    built, _, details = _build("multi_label", 0.1, 0)
    picks = built["train"][3]
    num_train = len(picks)
    num_scans = details["scan_pools"]["train"]
    clean5 = _clean_sets(details, num_train)["clean_05"]
    coverage = len(np.unique(np.concatenate([picks[i] for i in clean5]))) / num_scans
    assert len(clean5) == 600 and 0.04 <= coverage <= 0.06, coverage
    assert details["scans_used"]["clean_05"] / num_scans == coverage
    random5 = np.random.default_rng(0).choice(num_train, size=600, replace=False)
    assert len(np.unique(np.concatenate([picks[i] for i in random5]))) / num_scans > 0.6


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown digits_mosaic variant"):
        digits_mosaic.convert("three_label")
    with pytest.raises(ValueError, match="clean_fraction"):
        digits_mosaic.convert(clean_fraction=0.0)


@pytest.mark.slow
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
    details = info.provenance["details"]
    pools = details["scan_pools"]
    assert list(pools) == ["clean_01", "clean_02", "clean_05", "clean_10", "clean_20", "noisy_only", "train"]
    assert pools["clean_01"] == 10 and pools["clean_01"] < pools["clean_05"] < pools["clean_20"]
    assert pools["clean_20"] + pools["noisy_only"] == pools["train"] == details["digit_pools"]["train"]
    assert details["clean_images"] == {"clean_01": 6, "clean_02": 12, "clean_05": 30, "clean_10": 60, "clean_20": 120}
    assert details["scans_used"]["clean_10"] <= pools["clean_10"]
    assert "clean_order" not in details and "clean_pool_scans" not in details
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
    confusions = report["splits"]["noisy"]["confusions"]
    assert "most frequent confusions, split noisy" in proc.stdout and confusions
    assert [c["count"] for c in confusions] == sorted((c["count"] for c in confusions), reverse=True)
    assert all(c["true"] != c["noisy"] and 0 < c["share"] <= 1 for c in confusions)
    # Against verified labels (no truth) the clean split gives the same shares.
    assert (
        report["splits"]["clean"]["summary"]["noisy_annotations_judged"]
        == report["splits"]["clean"]["summary"]["noisy_annotations"]
    )

    proc = run_cli("inspect_dataset", str(tmp_path / "nothing"))
    assert proc.returncode == 1 and "dataset folder not found" in proc.stderr
