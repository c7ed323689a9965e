"""`restore SOURCE`: an archive rebuilt from a backup alone (a folder or a real S3 bucket), whole
or one study; every copy checked against the manifest; resumable; reasons per instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pacsctl.archive.archive import Archive
from pacsctl.integrity import findings as F
from pacsctl.integrity.backup import backup
from pacsctl.integrity.offsite import backup_to_bucket, open_store
from pacsctl.integrity.restore import MARKER, FolderSource, restore_archive
from pacsctl.storage.objects import ObjectStore
from tests.helpers import invoke_cli
from tests.integrity.test_verify import make_archive, stored


@pytest.fixture
def archive(archive_dir: Path, ct_factory: Any) -> Archive:
    arch = make_archive(archive_dir, ct_factory.series(3, patient_id="P1") + ct_factory.series(2, patient_id="P2"))
    yield arch
    arch.close()


def same_archive(restored: Path, original: Archive) -> None:
    recs = stored(original)
    again = Archive.open(restored, create=False)
    try:
        assert stored(again) == recs
        for rec in recs:
            assert again.path_of(rec["path"]).read_bytes() == original.path_of(rec["path"]).read_bytes()
            assert again.path_of(rec["path"]).stat().st_mode & 0o777 == 0o600
    finally:
        again.close()


def test_restore_from_a_folder_backup(archive: Archive, tmp_path: Path) -> None:
    backup(archive, tmp_path / "nas")
    archive.close()
    target = tmp_path / "restored"
    result = invoke_cli("--archive", target, "restore", tmp_path / "nas", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["restored"], summary["failed"], summary["indexed"], summary["verified"]) == (5, 0, 5, True)
    same_archive(target, archive)
    assert not (target / MARKER).exists() and not (target / "backup-manifest.ndjson").exists()
    assert invoke_cli("--archive", target, "verify").returncode == 0


def test_restore_refuses_a_non_empty_folder(archive: Archive, tmp_path: Path) -> None:
    backup(archive, tmp_path / "nas")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    result = invoke_cli("--archive", tmp_path / "busy", "restore", tmp_path / "nas")
    assert result.returncode == 2 and "not empty" in result.stderr


def test_a_damaged_copy_is_not_restored_and_named_with_its_reason_exit_3(archive: Archive, tmp_path: Path) -> None:
    backup(archive, tmp_path / "nas")
    recs = stored(archive)
    copy = tmp_path / "nas" / recs[0]["path"]
    data = bytearray(copy.read_bytes())
    data[-5] ^= 0xFF
    copy.write_bytes(bytes(data))
    (tmp_path / "nas" / recs[1]["path"]).unlink()
    archive.close()
    result = invoke_cli("--archive", tmp_path / "r", "restore", tmp_path / "nas", "--json")
    assert result.returncode == 3
    problems = {(r["path"], r["problem"]) for r in map(json.loads, result.stdout.splitlines()) if r["type"] == "problem"}
    assert problems == {(recs[0]["path"], "hash_mismatch"), (recs[1]["path"], "missing")}
    assert not (tmp_path / "r" / recs[0]["path"]).exists()
    assert (tmp_path / "r" / MARKER).exists()  # not finished: a second run may complete it


def test_an_interrupted_restore_resumes_keeping_what_is_in_place(archive: Archive, tmp_path: Path) -> None:
    backup(archive, tmp_path / "nas")
    target = tmp_path / "r"
    first = restore_archive(FolderSource(tmp_path / "nas"), target)
    assert first.ok
    # as if killed before the end: the marker is still there, some copies are missing
    (target / MARKER).write_text("x")
    recs = stored(archive)
    (target / recs[0]["path"]).unlink()
    again = restore_archive(FolderSource(tmp_path / "nas"), target)
    assert again.ok and (again.summary.restored, again.summary.present) == (1, 4)
    same_archive(target, archive)


def test_one_study_back_into_an_existing_archive(archive: Archive, tmp_path: Path) -> None:
    backup(archive, tmp_path / "nas")
    study = archive.index.instances()[0]["StudyInstanceUID"]
    lost = [r for r in archive.index.instances() if r["StudyInstanceUID"] == study]
    archive.close()
    for rec in lost:
        archive.path_of(rec["path"]).unlink()
    assert invoke_cli("reindex").returncode == 0  # the study is gone from the archive
    result = invoke_cli("restore", tmp_path / "nas", "--study", study, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["selected"], summary["restored"], summary["failed"]) == (len(lost), len(lost), 0)
    again = Archive.open(archive.root, create=False)
    assert {r["path"] for r in stored(again)} >= {r["path"] for r in lost}
    again.close()
    by_patient = invoke_cli("restore", tmp_path / "nas", "-k", "PatientID=P2", "--json")
    assert by_patient.returncode == 0, by_patient.stderr
    s = json.loads(by_patient.stdout.splitlines()[-1])
    assert (s["selected"], s["present"], s["restored"]) == (2, 2, 0)


@pytest.mark.interop
def test_restore_from_the_bucket_alone(archive: Archive, s3_url: str, tmp_path: Path) -> None:
    backup_to_bucket(archive, open_store(s3_url))
    archive.close()
    target = tmp_path / "from-bucket"
    result = invoke_cli("--archive", target, "restore", s3_url)
    assert result.returncode == 0, result.stderr
    same_archive(target, archive)
    ObjectStore(s3_url).delete([stored(archive)[0]["path"]])
    partial = invoke_cli("--archive", tmp_path / "second", "restore", s3_url, "--json")
    assert partial.returncode == 3
    problems = [r for r in map(json.loads, partial.stdout.splitlines()) if r["type"] == "problem"]
    assert [(p["path"], p["problem"], p["where"]) for p in problems] == [(stored(archive)[0]["path"], "missing", F.BACKUP)]
