"""The example dataset of examples/: made offline, converted by the manifest converter as a user's folder is."""

import csv
import subprocess
import sys

from cli_util import ROOT, manifest_args, run_cli


def test_the_digit_scans_example_makes_a_manifest_the_converter_reads(tmp_path):
    proc = subprocess.run(
        [sys.executable, f"{ROOT}/examples/digit_scans_manifest.py", f"--output_dir={tmp_path}", "--sizes=80,40,20,20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "rows.csv") as f:
        rows = list(csv.DictReader(f))
    assert [sum(r["split"] == s for r in rows) for s in ("noisy", "clean", "val", "test")] == [80, 40, 20, 20]
    # Partial verification in the clean split, every class verified in val and test, no verification in noisy.
    verified = {r["id"]: len([c for c in (r["verified_pos"] + ";" + r["verified_neg"]).split(";") if c]) for r in rows}
    assert {verified[r["id"]] for r in rows if r["split"] in ("val", "test")} == {10}
    assert 0 < sum(verified[r["id"]] for r in rows if r["split"] == "clean") < 40 * 10
    assert not any(verified[r["id"]] for r in rows if r["split"] == "noisy")
    proc = run_cli(
        "make_tfrecords",
        *manifest_args(tmp_path),
        f"--output_dir={tmp_path / 'data'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "clean=40, noisy=80, test=20, val=20; 0 bad rows skipped" in proc.stdout + proc.stderr
