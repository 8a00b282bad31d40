"""The committed evidence is the code's own: docs/results.json carries the fingerprint of today's plan, and the
README's results are numbers of that file."""

import dataclasses
import json
import os
import re

import pytest

from nlr_tf.reproduce import budgets
from nlr_tf.reproduce.fingerprint import code_version, plan_fingerprint
from nlr_tf.reproduce.rows import VARIANTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results.json")
README = os.path.join(ROOT, "README.md")
RESULTS_HEADING = "## Results"


def _committed():
    if not os.path.isfile(RESULTS):
        return None
    with open(RESULTS) as f:
        return json.load(f)


def test_the_committed_results_were_made_by_todays_plan():
    results = _committed()
    if results is None:
        pytest.skip("docs/results.json is not committed (the evidence is being regenerated)")
    assert results.get("fingerprint") == plan_fingerprint(budgets.FULL, VARIANTS), (
        "docs/results.json was made by another plan than the code's: what some row trains has changed since; "
        "regenerate it (nlr-reproduce --output_dir=out/reproduce) and copy results.* into docs/"
    )
    assert results["code_version"]["commit"]


def test_the_fingerprint_changes_with_what_any_row_trains():
    base = plan_fingerprint(budgets.FULL, VARIANTS)
    assert base == plan_fingerprint(budgets.FULL, VARIANTS)
    heads = dataclasses.replace(budgets.FULL.heads, max_steps=budgets.FULL.heads.max_steps + 1)
    assert plan_fingerprint(dataclasses.replace(budgets.FULL, heads=heads), VARIANTS) != base
    assert plan_fingerprint(dataclasses.replace(budgets.FULL, annotator_top_k=3), VARIANTS) != base
    assert plan_fingerprint(dataclasses.replace(budgets.FULL, dataset_sizes=(12000, 2000, 3999)), VARIANTS) != base
    assert plan_fingerprint(dataclasses.replace(budgets.FULL, reference_c=(1.0,)), VARIANTS) != base
    assert plan_fingerprint(budgets.FULL, ("multi_label",)) != base


def test_the_code_version_names_a_commit_and_whether_the_tree_was_clean():
    version = code_version(ROOT)
    if version["commit"] is None:
        pytest.skip("not a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}", version["commit"]) and version["clean_tree"] in (True, False)


def test_outside_a_git_checkout_the_code_version_is_unknown(tmp_path):
    assert code_version(str(tmp_path)) == {"commit": None, "clean_tree": None}


def _numbers(value, out):
    if isinstance(value, dict):
        for v in value.values():
            _numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            _numbers(v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out.append(float(value))
    return out


def test_every_number_of_the_readmes_results_is_a_number_of_the_committed_results_rounded_once():
    with open(README) as f:
        readme = f.read()
    if RESULTS_HEADING not in readme:
        assert _committed() is None, f"docs/results.json is committed but the README has no {RESULTS_HEADING!r}"
        pytest.skip("the README has no results section (the evidence is being regenerated)")
    section = readme.split(RESULTS_HEADING, 1)[1].split("\n## ", 1)[0]
    results = _committed()
    assert results is not None, "the README reports results but docs/results.json is not committed"
    # Points in results.json are fractions (0.8745) or already in points (differences, t, p): both count.
    known = _numbers(results, [])
    candidates = set()
    for v in known:
        for x in (v, 100 * v):
            for digits in (0, 1, 2):
                candidates.add(f"{x:.{digits}f}")
    missing = []
    for text in re.findall(r"(?<![\w.])[-+−]?\d+\.\d+", section):
        if text.lstrip("+-−") not in candidates and f"-{text.lstrip('+-−')}" not in candidates:
            missing.append(text)
    assert not missing, f"README numbers not in docs/results.json (rounded once): {missing}"
