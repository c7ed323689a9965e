"""`reindex`: the index rebuilt from objects/ alone equals the one built at ingest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from pacsctl.integrity import findings as F
from pacsctl.archive.archive import Archive
from pacsctl.integrity.backup import backup
from pacsctl.integrity.reindex import reindex
from pacsctl.integrity.verify import verify_archive
from tests.integrity.test_verify import flip_bit, make_archive


def snapshot(archive: Archive) -> tuple[list, list, list]:
    """Instances, series and studies as the index answers them, in a stable order."""
    by = lambda key: (lambda r: r[key])  # noqa: E731
    return (
        sorted(archive.index.instances(), key=by("path")),
        sorted(archive.index.series(), key=by("SeriesInstanceUID")),
        sorted(archive.index.studies(), key=by("StudyInstanceUID")),
    )


@pytest.fixture
def archive(archive_dir: Path, ct_factory: Any, dicom_test_files: list[Path]) -> Archive:
    names = ("CT_small.dcm", "ExplVR_BigEnd.dcm", "JPEG-lossy.dcm", "MR_small.dcm", "rtplan.dcm",
             "test-SR.dcm", "waveform_ecg.dcm", "image_dfl.dcm")  # big endian, JPEG, deflated, SR...
    real = [p for p in dicom_test_files if p.name in names]
    assert len(real) == len(names)
    files = ct_factory.series(4, patient_id="P1") + ct_factory.series(3, patient_id="P2") + real
    arch = make_archive(archive_dir, files)
    yield arch
    arch.close()


@pytest.mark.parametrize("jobs", [1, 2])
def test_reindex_rebuilds_the_same_index(archive: Archive, jobs: int) -> None:
    before = snapshot(archive)
    shutil.rmtree(archive.root / "index")
    archive.index.root.mkdir(mode=0o700)
    (archive.index.root / "journal").mkdir(mode=0o700)
    assert archive.index.studies() == []

    report = reindex(archive, jobs=jobs)

    assert report.ok and report.findings == []
    assert (report.summary.files, report.summary.indexed, report.summary.problems) == (15, 15, 0)
    assert report.summary.bytes == sum(r["size"] for r in before[0])
    assert snapshot(archive) == before
    assert verify_archive(archive).summary.ok


def test_reindex_drops_what_is_gone_and_reports_what_it_cannot_index(archive: Archive) -> None:
    instances = sorted(archive.index.instances(), key=lambda r: r["path"])
    gone = instances[0]
    archive.path_of(gone["path"]).unlink()
    junk = archive.root / "objects" / "ab" / "cd" / "junk.dcm"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")  # a DICOM start, then nothing
    misplaced = archive.root / "objects" / "00" / "00" / "copy.dcm"
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive.path_of(instances[1]["path"]), misplaced)

    report = reindex(archive, jobs=2)

    assert not report.ok and report.summary.indexed == 14 and report.summary.files == 16
    problems = {f.path: f for f in report.findings}
    assert set(problems) == {"objects/ab/cd/junk.dcm", "objects/00/00/copy.dcm"}
    assert (problems["objects/ab/cd/junk.dcm"].problem, problems["objects/ab/cd/junk.dcm"].action) == (F.UNREADABLE, F.QUARANTINED)
    assert "misplaced" in problems["objects/00/00/copy.dcm"].detail  # a stray copy: its place is taken
    assert problems["objects/00/00/copy.dcm"].action == F.QUARANTINED
    assert not junk.exists() and not misplaced.exists() and report.summary.quarantined == 2
    paths = {r["path"] for r in archive.index.iter_instances()}
    assert gone["path"] not in paths and len(paths) == 14


def test_reindex_of_a_backup_checks_files_against_its_manifest(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    instances = sorted(archive.index.instances(), key=lambda r: r["path"])
    flip_bit(dest / instances[0]["path"], offset=instances[0]["size"] - 5)  # in the pixel data: still parses
    (dest / instances[1]["path"]).unlink()

    with Archive.open(dest, create=False) as restored:
        report = reindex(restored, jobs=1)
        found = {(f.problem, f.path) for f in report.findings}
        assert found == {(F.HASH_MISMATCH, instances[0]["path"]), (F.MISSING, instances[1]["path"])}
        assert report.summary.indexed == 13 and report.summary.checked_against_manifest == 14
        # The damaged copy is not recorded as good: verify names it as unknown to the index.
        assert instances[0]["path"] not in {r["path"] for r in restored.index.iter_instances()}


def test_reindex_while_another_process_writes_loses_nothing(archive: Archive, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.integrity.test_backup import WRITER
    from tests.helpers import REPO_ROOT

    stop = tmp_path / "stop"
    (tmp_path / "w").mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(archive.root), str(tmp_path / "w"), str(stop)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    try:
        for _ in range(5):
            assert writer.stdout.readline()
        report = reindex(archive, jobs=2)
        during = writer.poll() is None
    finally:
        stop.touch()
        writer.wait(60)
    assert writer.returncode == 0 and during and report.ok
    archive.index.flush()
    on_disk = {p.relative_to(archive.root).as_posix() for p in (archive.root / "objects").rglob("*.dcm")}
    assert {r["path"] for r in archive.index.iter_instances()} == on_disk
    assert verify_archive(archive).summary.ok


def test_reindex_of_files_whose_header_is_longer_than_the_head_kept(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacsctl.integrity import filecheck

    before = snapshot(archive)
    monkeypatch.setattr(filecheck, "WHOLE_FILE_LIMIT", 2048)
    monkeypatch.setattr(filecheck, "HEADER_LIMIT", 200)
    report = reindex(archive, jobs=1)
    assert report.ok and report.summary.indexed == 15
    assert snapshot(archive) == before


def test_an_unknown_file_in_objects_has_a_way_out(archive: Archive) -> None:
    """verify names it and what reindex does; reindex resolves it (the user went in a loop:
    verify said run reindex, reindex refused the file as misplaced, verify said it again)."""
    instances = sorted(archive.index.instances(), key=lambda r: r["path"])
    lost = instances[2]
    misplaced = archive.root / "objects" / "00" / "00" / "moved-by-hand.dcm"
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    os.replace(archive.path_of(lost["path"]), misplaced)  # e.g. restored by hand to the wrong folder
    junk = archive.root / "objects" / "ab" / "notes.txt"
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_text("not DICOM")

    checked = {f.path: f for f in verify_archive(archive).findings}
    assert "`pacsctl reindex` moves it there" in checked["objects/00/00/moved-by-hand.dcm"].detail
    assert lost["path"] in checked["objects/00/00/moved-by-hand.dcm"].detail
    assert "`pacsctl reindex` moves it to the quarantine" in checked["objects/ab/notes.txt"].detail

    report = reindex(archive, jobs=1)
    found = {f.path: f for f in report.findings}
    assert found["objects/00/00/moved-by-hand.dcm"].action == F.ADOPTED
    assert found["objects/ab/notes.txt"].action == F.QUARANTINED
    assert (report.summary.adopted, report.summary.quarantined, report.summary.indexed) == (1, 1, 15)
    assert archive.path_of(lost["path"]).exists() and not misplaced.exists() and not junk.exists()
    assert any(q["origin"] == "objects/ab/notes.txt" for q in archive.quarantined())

    assert verify_archive(archive).summary.ok  # out of the loop
    again = reindex(archive)
    assert again.ok and again.findings == [] and again.summary.indexed == 15
