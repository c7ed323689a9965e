"""The archive facade: ingest, duplicates and conflicts, quarantine, private modes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom
import pytest

from pacsctl.archive.archive import DUPLICATE, QUARANTINED, SKIPPED, STORED, Archive
from pacsctl.errors import UsageError
from tests.storage.checks import bad_modes, consistency, object_files, sha256


def variant(path: Path, **changes: object) -> bytes:
    """The bytes of `path` with some attributes changed (same SOP Instance UID)."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = path.with_name(path.stem + "-variant.dcm")
    ds.save_as(out, enforce_file_format=True)
    return out.read_bytes()


def test_ingest_stores_bytes_as_given_and_indexes(archive_dir: Path, ct_factory) -> None:
    paths = ct_factory.series(3, patient_id="P1")
    with Archive.open(archive_dir) as archive:
        results = archive.ingest([(p.read_bytes(), str(p)) for p in paths])
        assert [r.status for r in results] == [STORED] * 3
        for r, p in zip(results, paths):
            stored = archive.path_of(r.path)
            assert stored.read_bytes() == p.read_bytes()
            assert r.sop_instance_uid == pydicom.dcmread(p).SOPInstanceUID
            assert r.path == Archive.object_relpath(r.sop_instance_uid)
        # indexed (journaled) the moment ingest returns
        assert len(archive.index.instances()) == 3
    assert consistency(archive_dir) == []


def test_objects_are_spread_two_levels_deep(archive_dir: Path) -> None:
    rel = Archive.object_relpath("1.2.840.113619.2.1.1")
    parts = rel.split("/")
    assert parts[0] == "objects" and len(parts[1]) == 2 and len(parts[2]) == 2
    assert parts[3] == "1.2.840.113619.2.1.1.dcm"
    hostile = Archive.object_relpath("../../../etc/passwd")
    assert ".." not in hostile and hostile.count("/") == 3


def test_identical_duplicate_is_a_no_op(archive_dir: Path, ct_factory) -> None:
    path = ct_factory()
    data = path.read_bytes()
    with Archive.open(archive_dir) as archive:
        first = archive.ingest([(data, "a")])
        before = {rel: p.stat().st_mtime_ns for rel, p in object_files(archive_dir).items()}
        again = archive.ingest([(data, "b"), (data, "c")])
        assert [r.status for r in first] == [STORED]
        assert [r.status for r in again] == [DUPLICATE, DUPLICATE]
        assert {rel: p.stat().st_mtime_ns for rel, p in object_files(archive_dir).items()} == before
        assert list(archive.quarantined()) == []
        assert len(archive.index.instances()) == 1
    assert list((archive_dir / "tmp").iterdir()) == []


def test_conflict_keep_quarantines_the_newcomer(archive_dir: Path, ct_factory) -> None:
    path = ct_factory(patient_id="P1")
    original = path.read_bytes()
    other = variant(path, PatientName="CHANGED^NAME")
    with Archive.open(archive_dir) as archive:
        archive.ingest([(original, "first")])
        [result] = archive.ingest([(other, "second")], on_conflict="keep")
        assert result.status == QUARANTINED and "conflict" in result.reason
        stored = archive.path_of(Archive.object_relpath(result.sop_instance_uid))
        assert stored.read_bytes() == original
        loser = archive.path_of(result.path)
        assert loser.read_bytes() == other  # nothing silently dropped
        [info] = archive.quarantined()
        assert info["origin"] == "second" and info["SOPInstanceUID"] == result.sop_instance_uid
        assert "different bytes" in info["reason"]
        [inst] = archive.index.instances()
        assert inst["sha256"] == sha256(stored) and inst["PatientName"] == "TEST^PATIENT"
    assert consistency(archive_dir) == []


def test_conflict_replace_quarantines_the_archived_copy(archive_dir: Path, ct_factory) -> None:
    path = ct_factory(patient_id="P1")
    original = path.read_bytes()
    other = variant(path, PatientName="NEW^NAME")
    with Archive.open(archive_dir) as archive:
        archive.ingest([(original, "first")])
        [result] = archive.ingest([(other, "second")], on_conflict="replace")
        assert result.status == STORED and "replace" in result.reason
        assert archive.path_of(result.path).read_bytes() == other
        [info] = archive.quarantined()
        assert archive.path_of(info["path"]).read_bytes() == original
        assert "replaced" in info["reason"]
        [inst] = archive.index.instances()
        assert inst["PatientName"] == "NEW^NAME" and inst["sha256"] == sha256(archive.path_of(result.path))
        # the replaced copy is still in quarantine even when the replacing one is replaced back
        [back] = archive.ingest([(original, "third")], on_conflict="replace")
        assert back.status == STORED
        assert sorted(sha256(archive.path_of(i["path"])) for i in archive.quarantined()) == sorted(
            [sha256(path), __import__("hashlib").sha256(other).hexdigest()]
        )
    assert consistency(archive_dir) == []


def test_invalid_policy_is_a_usage_error(archive_dir: Path, ct_factory) -> None:
    with Archive.open(archive_dir) as archive, pytest.raises(UsageError):
        archive.ingest([(ct_factory().read_bytes(), "x")], on_conflict="newest")


def test_quarantine_is_idempotent_by_content(archive_dir: Path, broken_dicom_files) -> None:
    data = [(p.read_bytes(), str(p)) for p in broken_dicom_files]
    with Archive.open(archive_dir) as archive:
        first = archive.ingest(data)
        assert [r.status for r in first] == [QUARANTINED] * len(data)
        assert all(r.reason for r in first)
        second = archive.ingest(data)
        assert [r.path for r in second] == [r.path for r in first]
        files_now = sorted((archive_dir / "quarantine").rglob("*"))
        archive.ingest(data)
        assert sorted((archive_dir / "quarantine").rglob("*")) == files_now
        assert len([p for p in files_now if p.suffix == ".dcm"]) == len(data)
        for r, (raw, _origin) in zip(first, data):
            assert archive.path_of(r.path).read_bytes() == raw
            reason = json.loads(archive.path_of(r.path).with_suffix(".json").read_text())
            assert reason["reason"] == r.reason
    assert object_files(archive_dir) == {}


def test_skips_non_dicom_and_dicomdir(archive_dir: Path, testdata_dir: Path) -> None:
    items = [
        (b"[autorun]\r\nopen=viewer.exe\r\n", "autorun.inf"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"0" * 500, "report.pdf"),
        (b"MZ\x90\x00" + b"\x00" * 600, "viewer.exe"),
        (b"", "empty.dcm"),
        ((testdata_dir / "dicomdirtests" / "DICOMDIR").read_bytes(), "DICOMDIR"),
    ]
    with Archive.open(archive_dir) as archive:
        results = archive.ingest(items)
    assert [r.status for r in results] == [SKIPPED] * 5
    assert all(r.reason for r in results)
    assert object_files(archive_dir) == {} and list((archive_dir / "quarantine").iterdir()) == []


def test_dry_run_writes_nothing(archive_dir: Path, ct_factory, broken_dicom_files) -> None:
    good = ct_factory()
    with Archive.open(archive_dir) as archive:
        before = sorted(p for p in archive_dir.rglob("*"))
        results = archive.ingest(
            [(good.read_bytes(), "good"), (broken_dicom_files[0].read_bytes(), "bad"), (b"junk" * 10, "junk")],
            dry_run=True,
        )
        assert [r.status for r in results] == [STORED, QUARANTINED, SKIPPED]
        assert sorted(p for p in archive_dir.rglob("*")) == before
        archive.ingest([(good.read_bytes(), "good")])
        [dup] = archive.ingest([(good.read_bytes(), "good")], dry_run=True)
        assert dup.status == DUPLICATE


def test_every_file_and_folder_is_private(archive_dir: Path, ct_factory, broken_dicom_files) -> None:
    """0700/0600 everywhere: objects, index shards and journals, quarantine, tmp, config,
    even with a permissive umask."""
    old = os.umask(0o000)
    try:
        paths = ct_factory.series(4)
        with Archive.open(archive_dir) as archive:
            archive.ingest([(p.read_bytes(), str(p)) for p in paths])
            archive.ingest([(broken_dicom_files[0].read_bytes(), "broken")])
            archive.ingest([(variant(paths[0], PatientName="X"), "conflict")])
            archive.index.flush()
            archive.ingest([(ct_factory().read_bytes(), "journaled only")])
            assert list((archive_dir / "index" / "journal").glob("*.ndjson"))
            archive.save_config()
            assert bad_modes(archive_dir) == []
        assert bad_modes(archive_dir) == []
    finally:
        os.umask(old)
    kinds = {p.relative_to(archive_dir).parts[0] for p in archive_dir.rglob("*")}
    assert {"objects", "index", "quarantine", "tmp", "pacsctl.toml"} <= kinds


def test_open_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("keep me")
    with pytest.raises(UsageError):
        Archive.open(tmp_path / "mine")
    with pytest.raises(UsageError):
        Archive.open(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()


def test_replace_that_moves_an_instance_to_another_study_reindexes_it(archive_dir: Path, ct_factory) -> None:
    """A corrected copy filed under another study/series: the old study loses the instance
    (and disappears with its patient when empty), nothing is indexed twice."""
    a = ct_factory(sop_uid="1.2.3.4", study_uid="1.2.3", series_uid="1.2.3.1", patient_id="WRONG")
    b = ct_factory(sop_uid="1.2.3.5", study_uid="1.2.3", series_uid="1.2.3.1", patient_id="WRONG")
    c = ct_factory(sop_uid="1.2.3.6", study_uid="1.2.3", series_uid="1.2.3.2", patient_id="WRONG")
    with Archive.open(archive_dir) as archive:
        archive.ingest([(p.read_bytes(), str(p)) for p in (a, b, c)])
        archive.index.flush()
        moved_series = ct_factory(sop_uid="1.2.3.6", study_uid="1.2.3", series_uid="1.2.3.1", patient_id="WRONG", series_number=7)
        archive.ingest([(moved_series.read_bytes(), "fix series")], on_conflict="replace")
        [study] = archive.index.studies()
        assert (study["NumberOfStudyRelatedSeries"], study["NumberOfStudyRelatedInstances"]) == (1, 3)
        for n, sop in enumerate(("1.2.3.4", "1.2.3.5", "1.2.3.6")):
            fixed = ct_factory(sop_uid=sop, study_uid="9.8.7", series_uid="9.8.7.1", patient_id="RIGHT", pixel_seed=n)
            archive.ingest([(fixed.read_bytes(), f"fix {sop}")], on_conflict="replace")
            if n == 0:  # the old study still holds the other two, and is still listed
                assert {s["StudyInstanceUID"]: s["NumberOfStudyRelatedInstances"] for s in archive.index.studies()} == {"1.2.3": 2, "9.8.7": 1}
        archive.index.flush()
        [study] = archive.index.studies()
        assert study["StudyInstanceUID"] == "9.8.7" and study["NumberOfStudyRelatedInstances"] == 3
        assert [p["PatientID"] for p in archive.index.patients()] == ["RIGHT"]
        assert len(archive.index.instances()) == 3
        assert len(list(archive.quarantined())) == 4  # every replaced copy kept
    assert consistency(archive_dir) == []
