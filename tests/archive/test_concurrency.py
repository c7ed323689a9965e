"""Several writer processes on one archive at once: nothing lost, nothing duplicated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from benchmarks.corpus import make_ct
from pacsctl.archive.archive import Archive
from tests.helpers import cli_env
from tests.storage.checks import consistency, object_files, sha256

STUDY = "1.2.826.0.1.3680043.8.498.500"


def make_trees(tmp_path: Path, count: int = 160) -> tuple[Path, Path, dict[str, str]]:
    """Two input trees sharing the middle half of their instances (as copies, other names).
    Returns both and {SOPInstanceUID: sha256 of its bytes}."""
    a, b = tmp_path / "a", tmp_path / "b"
    expected: dict[str, str] = {}
    for i in range(count):
        series = f"{STUDY}.{i % 4}"
        path = make_ct(a / f"s{i % 4}" / f"{i:04d}.dcm", patient_id="CONC", study_uid=STUDY, series_uid=series,
                       sop_uid=f"{series}.{i}", instance_number=i, pixel_seed=i, rows=96, cols=96)
        expected[f"{series}.{i}"] = sha256(path)
    files = sorted(a.rglob("*.dcm"))
    quarter = count // 4
    for n, path in enumerate(files):
        if n >= quarter:  # b: last three quarters of a (shared half), copied under other names
            dest = b / "copy" / f"x{n:04d}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest)
        if n >= count - quarter:  # ... and a's last quarter is only in b
            path.unlink()
    for i in range(count, count + quarter):  # b's own new instances in a new series
        series = f"{STUDY}.9"
        path = make_ct(b / "own" / f"{i}.dcm", patient_id="CONC", study_uid=STUDY, series_uid=series,
                       sop_uid=f"{series}.{i}", instance_number=i, pixel_seed=i, rows=96, cols=96, extra={"Modality": "MR"})
        expected[f"{series}.{i}"] = sha256(path)
    return a, b, expected


def start_import(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pacsctl", "import", "--json", *args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary_of(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_two_imports_of_overlapping_trees_at_once(jobs: str, tmp_path: Path, archive_dir: Path) -> None:
    a, b, expected = make_trees(tmp_path)
    Archive.open(archive_dir).close()
    procs = [start_import("--jobs", jobs, str(a)), start_import("--jobs", jobs, str(b))]
    sa, sb = (summary_of(p) for p in procs)
    n_a, n_b = len(list(a.rglob("*.dcm"))), len([p for p in b.rglob("*") if p.is_file()])
    assert sa["files"] == n_a and sb["files"] == n_b
    assert sa["quarantined"] == sb["quarantined"] == sa["skipped"] == sb["skipped"] == 0
    # each shared instance stored by exactly one of the two, the other saw a duplicate
    assert sa["imported"] + sb["imported"] == len(expected)
    assert sa["duplicates"] + sb["duplicates"] == n_a + n_b - len(expected)
    stored = object_files(archive_dir)
    assert len(stored) == len(expected)
    assert {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: sha256(p) for p in stored.values()} == expected
    assert consistency(archive_dir) == []
    with Archive.open(archive_dir) as archive:
        [study] = archive.index.studies(patient_ids=["CONC"])
        assert study["NumberOfStudyRelatedInstances"] == len(expected)
        assert study["NumberOfStudyRelatedSeries"] == 5
        assert study["ModalitiesInStudy"] == ["CT", "MR"]
        assert list((archive_dir / "index" / "journal").glob("*.ndjson")) == []
        assert list(archive.quarantined()) == []


def test_import_while_another_process_reads_and_folds(tmp_path: Path, archive_dir: Path) -> None:
    """An import runs while a second process keeps listing and folding the index: the reader
    never sees a count go down or a study with more instances than exist, and the end is exact."""
    a, b, expected = make_trees(tmp_path, count=120)
    Archive.open(archive_dir).close()
    reader_code = """
import json, sys, time
from pathlib import Path
from pacsctl.storage.index import Index
from pacsctl.dicom.attributes import INDEX_FIELDS
root = Path(sys.argv[1]); ix = Index(root / "index", root / "tmp", INDEX_FIELDS)
seen = []
end = time.time() + 60
while time.time() < end:
    studies = ix.studies()
    n = sum(s["NumberOfStudyRelatedInstances"] for s in studies)
    seen.append(n)
    ix.flush()
    if n >= int(sys.argv[2]):
        break
print(json.dumps(seen))
"""
    reader = subprocess.Popen([sys.executable, "-c", reader_code, str(archive_dir), str(len(expected))],
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    procs = [start_import("--jobs", "2", str(a)), start_import("--jobs", "1", str(b))]
    for p in procs:
        summary_of(p)
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert len(seen) > 3
    assert all(x <= y for x, y in zip(seen, seen[1:])), seen
    assert seen[-1] == len(expected)
    assert consistency(archive_dir) == []
    assert os.listdir(archive_dir / "tmp") == []
