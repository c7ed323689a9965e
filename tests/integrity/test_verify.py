"""`verify`: every kind of damage is found and named; repair restores byte-identical files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pacsctl.integrity import findings as F
from pacsctl.archive.archive import Archive
from pacsctl.integrity.backup import backup
from pacsctl.integrity.manifest import manifest_path
from pacsctl.integrity.verify import QUICK, verify_archive, verify_backup


def make_archive(archive_dir: Path, paths: list[Path]) -> Archive:
    """An archive holding `paths` (all must be stored)."""
    archive = Archive.open(archive_dir)
    results = archive.ingest([(p.read_bytes(), str(p)) for p in paths])
    assert [r.status for r in results] == ["stored"] * len(paths)
    archive.index.flush()
    return archive


def stored(archive: Archive) -> list[dict]:
    """Index records, in path order."""
    return sorted(archive.index.iter_instances(), key=lambda r: r["path"])


def flip_bit(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x10
    path.write_bytes(bytes(data))


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def by_problem(report: Any) -> dict[str, list]:
    out: dict[str, list] = {}
    for finding in report.findings:
        out.setdefault(finding.problem, []).append(finding)
    return out


@pytest.fixture
def archive(archive_dir: Path, ct_factory: Any, dicom_test_files: list[Path]) -> Archive:
    """Six CT slices and three of pydicom's real files (big endian, JPEG, an RT plan)."""
    extra = [p for p in dicom_test_files if p.name in ("ExplVR_BigEnd.dcm", "JPEG-lossy.dcm", "rtplan.dcm")]
    assert len(extra) == 3
    arch = make_archive(archive_dir, ct_factory.series(6, patient_id="P1") + extra)
    yield arch
    arch.close()


def test_clean_archive_verifies_ok(archive: Archive) -> None:
    report = verify_archive(archive, jobs=2)
    assert report.findings == []
    s = report.summary
    assert (s.ok, s.checked, s.hashed, s.problems) == (True, 9, 9, 0)
    assert s.bytes == sum(r["size"] for r in stored(archive))


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_kind_of_damage_is_found_and_named(archive: Archive, jobs: int) -> None:
    recs = stored(archive)
    flipped, truncated, deleted = (archive.path_of(r["path"]) for r in recs[:3])
    flip_bit(flipped)
    os.truncate(truncated, truncated.stat().st_size - 100)
    deleted.unlink()
    # A DICOM file nobody indexed, and a stray non-DICOM file.
    unknown = archive.root / "objects" / "ff" / "ff" / "1.2.3.4.dcm"
    unknown.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive.path_of(recs[4]["path"]), unknown)
    stray = archive.root / "objects" / "00" / "notes.txt"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("not dicom")
    leftover = archive.tmp_dir / f"{dead_pid()}-0123456789abcdef.part"
    leftover.write_bytes(b"\0" * 500)

    report = verify_archive(archive, jobs=jobs)

    problems = by_problem(report)
    assert [f.path for f in problems[F.HASH_MISMATCH]] == [recs[0]["path"]]
    assert [f.path for f in problems[F.WRONG_SIZE]] == [recs[1]["path"]]
    assert [f.path for f in problems[F.MISSING]] == [recs[2]["path"]]
    for finding, rec in zip(problems[F.HASH_MISMATCH] + problems[F.WRONG_SIZE] + problems[F.MISSING], recs):
        assert finding.sop_instance_uid == rec["SOPInstanceUID"]
        assert finding.where == F.ARCHIVE and finding.action == ""
    unknown_findings = {f.path: f for f in problems[F.UNKNOWN_FILE]}
    assert set(unknown_findings) == {"objects/ff/ff/1.2.3.4.dcm", "objects/00/notes.txt"}
    assert unknown_findings["objects/ff/ff/1.2.3.4.dcm"].sop_instance_uid == recs[4]["SOPInstanceUID"]
    assert "not a readable DICOM file" in unknown_findings["objects/00/notes.txt"].detail
    [temp] = problems[F.LEFTOVER_TEMP]
    assert temp.path == f"tmp/{leftover.name}" and temp.action == F.REMOVED
    assert not leftover.exists()
    s = report.summary
    assert (s.ok, s.problems, s.cleaned, s.repaired) == (False, 5, 1, 0)
    assert s.hashed == 9  # the deleted one counts as checked: its open failed


def test_unreadable_header_with_matching_size_is_named(archive: Archive) -> None:
    """Same-size garbage: the hash catches it first; the header check catches a broken record."""
    rec = stored(archive)[0]
    path = archive.path_of(rec["path"])
    path.write_bytes(b"\xff" * rec["size"])
    [finding] = verify_archive(archive, jobs=1).findings
    assert finding.problem == F.HASH_MISMATCH


def test_wrong_instance_in_place_is_named(archive: Archive) -> None:
    """A file holding another instance than the index says (copied over by hand)."""
    recs = sorted(archive.index.instances(), key=lambda r: r["path"])  # with their series UIDs
    target = archive.path_of(recs[0]["path"])
    shutil.copyfile(archive.path_of(recs[1]["path"]), target)
    # Keep the index's size and hash in step with the swapped file, so only the UID tells.
    archive.index.add([{**recs[0], "size": recs[1]["size"], "sha256": recs[1]["sha256"]}])
    archive.index.flush()
    report = verify_archive(archive, jobs=1)
    mismatches = [f for f in report.findings if f.problem == F.UID_MISMATCH]
    assert len(mismatches) == 1 and recs[1]["SOPInstanceUID"] in mismatches[0].detail


def test_live_writers_temp_files_are_left_alone(archive: Archive) -> None:
    mine = archive.tmp_dir / f"{os.getpid()}-feedbeef.part"
    mine.write_bytes(b"in progress")
    report = verify_archive(archive, jobs=1)
    assert report.summary.ok and mine.exists()


def test_quick_checks_presence_and_size_only(archive: Archive) -> None:
    recs = stored(archive)
    flip_bit(archive.path_of(recs[0]["path"]))
    os.truncate(archive.path_of(recs[1]["path"]), 10)
    archive.path_of(recs[2]["path"]).unlink()
    report = verify_archive(archive, mode=QUICK)
    assert sorted((f.problem, f.path) for f in report.findings) == sorted(
        [(F.WRONG_SIZE, recs[1]["path"]), (F.MISSING, recs[2]["path"])]
    )
    assert report.summary.hashed == 0 and report.summary.bytes == 0


def test_sample_rehashes_a_share_and_quick_checks_the_rest(archive: Archive) -> None:
    archive.path_of(stored(archive)[0]["path"]).unlink()
    report = verify_archive(archive, sample=0.34, jobs=1)
    assert report.summary.hashed == 3 and report.summary.checked == 9
    assert report.summary.mode == "sample 0.34"
    assert [f.problem for f in report.findings] == [F.MISSING]  # found either way


def test_repair_restores_byte_identical_files(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    assert backup(archive, dest).ok
    recs = stored(archive)
    originals = {r["path"]: archive.path_of(r["path"]).read_bytes() for r in recs}
    flip_bit(archive.path_of(recs[0]["path"]))
    os.truncate(archive.path_of(recs[1]["path"]), 300)
    archive.path_of(recs[2]["path"]).unlink()

    report = verify_archive(archive, repair_from=dest, jobs=2)

    assert {f.path: f.action for f in report.findings} == {r["path"]: F.RESTORED for r in recs[:3]}
    assert (report.summary.repaired, report.summary.problems, report.summary.ok) == (3, 0, False)
    for rec in recs:
        path = archive.path_of(rec["path"])
        assert path.read_bytes() == originals[rec["path"]]
        assert path.stat().st_mode & 0o777 == 0o600
    assert verify_archive(archive).summary.ok


def test_repair_lists_what_it_cannot_repair(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    recs = stored(archive)
    for rec in recs[:2]:
        flip_bit(archive.path_of(rec["path"]))
    flip_bit(dest / recs[0]["path"])        # the backup copy is damaged too
    (dest / recs[1]["path"]).unlink()       # the backup copy is gone

    report = verify_archive(archive, repair_from=dest, jobs=1)

    actions = {f.path: f.action for f in report.findings}
    assert "differs from the recorded hash" in actions[recs[0]["path"]]
    assert "no copy in the backup" in actions[recs[1]["path"]]
    assert report.summary.problems == 2 and report.summary.repaired == 0
    # Nothing half-done: the damaged files are as they were, no temp file left.
    assert not list(archive.tmp_dir.iterdir())


# -- verifying a backup ----------------------------------------------------------------------


def test_clean_backup_verifies_ok(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    report = verify_backup(dest, archive, jobs=2)
    assert report.findings == [] and report.summary.ok
    assert (report.summary.target, report.summary.checked, report.summary.hashed) == ("backup", 9, 9)


def test_backup_damage_is_found_and_named(archive: Archive, tmp_path: Path, ct_factory: Any) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    recs = stored(archive)
    flip_bit(dest / recs[0]["path"])
    (dest / recs[1]["path"]).unlink()
    os.truncate(dest / recs[2]["path"], 50)
    shutil.copyfile(dest / recs[3]["path"], dest / "objects" / "stray.dcm")
    (dest / "tmp" / f"{dead_pid()}-abc.part").write_bytes(b"x")
    # The archive moves on: one new instance not backed up yet, one file lost from the archive.
    new = ct_factory(patient_id="P2")
    [result] = archive.ingest([(new.read_bytes(), str(new))])
    assert result.status == "stored"

    report = verify_backup(dest, archive, jobs=1)

    got = {(f.where, f.problem, f.path) for f in report.findings}
    assert (F.BACKUP, F.HASH_MISMATCH, recs[0]["path"]) in got
    assert (F.BACKUP, F.MISSING, recs[1]["path"]) in got
    assert (F.BACKUP, F.WRONG_SIZE, recs[2]["path"]) in got
    assert (F.BACKUP, F.UNKNOWN_FILE, "objects/stray.dcm") in got
    assert (F.BACKUP, F.LEFTOVER_TEMP, next(p for w, pr, p in got if pr == F.LEFTOVER_TEMP)) in got
    assert (F.BACKUP, F.NOT_BACKED_UP, result.path) in got
    assert len(got) == 6 and not report.summary.ok


def test_file_the_archive_lost_is_named(archive: Archive, tmp_path: Path) -> None:
    """Deleted by hand, then the index rebuilt: only the backup still knows the instance."""
    from pacsctl.integrity.reindex import reindex

    dest = tmp_path / "backup"
    backup(archive, dest)
    lost = stored(archive)[1]
    archive.path_of(lost["path"]).unlink()
    assert reindex(archive, jobs=1).ok
    report = verify_backup(dest, archive, mode=QUICK)
    assert [(f.where, f.problem, f.path) for f in report.findings] == [(F.ARCHIVE, F.NOT_IN_ARCHIVE, lost["path"])]


def test_backup_record_changed_is_differs_from_archive(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    rec = sorted(archive.index.instances(), key=lambda r: r["path"])[0]  # with its series UIDs
    archive.index.add([{**rec, "sha256": "0" * 64}])
    archive.index.flush()
    report = verify_backup(dest, archive, mode=QUICK)
    assert [(f.problem, f.path) for f in report.findings] == [(F.DIFFERS_FROM_ARCHIVE, rec["path"])]


def test_damaged_manifest_is_named_and_backup_checked_alone(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    manifest = manifest_path(dest)
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join(lines[:-3]))  # cut short: the last two entries and the end

    report = verify_backup(dest, None, jobs=1)

    problems = by_problem(report)
    assert [f.path for f in problems[F.MANIFEST_DAMAGED]] == ["backup-manifest.ndjson"]
    # The two files the manifest lost are now unknown to it.
    assert len(problems[F.UNKNOWN_FILE]) == 2
    assert report.summary.checked == 7


def test_verify_backup_needs_a_manifest(tmp_path: Path, archive: Archive) -> None:
    from pacsctl.errors import UsageError

    with pytest.raises(UsageError):
        verify_backup(tmp_path, archive)


def test_file_replaced_during_the_check_is_not_reported(archive: Archive, monkeypatch: pytest.MonkeyPatch, ct_factory: Any) -> None:
    """`serve` with on-conflict replace swaps a file after verify read the index: no false alarm."""
    from pacsctl.integrity import verify as verifier

    rec = sorted(archive.index.instances(), key=lambda r: r["path"])[0]
    newer = ct_factory(sop_uid=rec["SOPInstanceUID"], study_uid=rec["StudyInstanceUID"], series_uid=rec["SeriesInstanceUID"], pixel_seed=99)
    original = verifier.check_files

    def replace_then_check(*args: Any, **kwargs: Any) -> Any:
        [result] = archive.ingest([(newer.read_bytes(), str(newer))], on_conflict="replace")
        assert result.status == "stored" and result.path == rec["path"]
        return original(*args, **kwargs)

    monkeypatch.setattr(verifier, "check_files", replace_then_check)
    report = verify_archive(archive, jobs=1)
    assert report.findings == [] and report.summary.ok


def test_a_file_the_os_cannot_read_is_unreadable(archive: Archive, tmp_path: Path) -> None:
    """Tests run as root, so permissions do not stop a read; a folder in a file's place does."""
    rec = stored(archive)[0]
    backup(archive, tmp_path / "backup")
    path = archive.path_of(rec["path"])
    path.unlink()
    path.mkdir()
    [finding] = verify_archive(archive, jobs=1).findings
    assert (finding.problem, finding.path, finding.sop_instance_uid) == (F.UNREADABLE, rec["path"], rec["SOPInstanceUID"])
    assert "cannot read" in finding.detail
    [finding] = verify_archive(archive, jobs=1, repair_from=tmp_path / "backup").findings
    assert finding.action.startswith("not repaired: cannot replace the file")


def test_a_receive_in_progress_is_never_taken_for_a_leftover(archive: Archive) -> None:
    """`serve` streams incoming data sets to tmp/.incoming-* (no pid in the name): only age tells."""
    receiving = archive.tmp_dir / ".incoming-k2j3h4"
    receiving.write_bytes(b"half a C-STORE")
    stale = archive.tmp_dir / ".incoming-old123"
    stale.write_bytes(b"from a crash two days ago")
    two_days_ago = stale.stat().st_mtime - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    dead = archive.tmp_dir / f".incoming-{dead_pid()}-abc"
    dead.write_bytes(b"x")

    report = verify_archive(archive, jobs=1)

    assert receiving.exists() and not stale.exists() and not dead.exists()
    assert sorted(f.path for f in report.findings) == sorted(f"tmp/{p.name}" for p in (stale, dead))
    assert report.summary.ok and report.summary.cleaned == 2


def test_a_file_whose_index_entry_is_on_its_way_is_not_unknown(archive: Archive, ct_factory: Any) -> None:
    """A writer renamed its file into objects/ and journals the index entry a moment later."""
    import hashlib
    import threading

    from pacsctl.dicom.instance import read_instance
    from pacsctl.dicom.attributes import index_record

    data = ct_factory(patient_id="LATE").read_bytes()
    inst = read_instance(data)
    relpath = Archive.object_relpath(inst.sop_instance_uid)
    archive.path_of(relpath).parent.mkdir(parents=True, exist_ok=True)
    archive.path_of(relpath).write_bytes(data)
    record = index_record(inst.fields(), transfer_syntax_uid=inst.transfer_syntax_uid, path=relpath,
                          size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def journal_later() -> None:
        time.sleep(0.3)
        with Archive.open(archive.root) as writer:
            writer.index.add([record])

    thread = threading.Thread(target=journal_later)
    thread.start()
    report = verify_archive(archive, jobs=1)
    thread.join()
    assert report.findings == [] and report.summary.ok


def test_huge_files_are_hashed_in_chunks_and_parsed_from_their_head(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files past WHOLE_FILE_LIMIT are never held whole: chunks are hashed, the head parsed."""
    from pacsctl.integrity import filecheck
    from pacsctl.integrity.reindex import reindex

    monkeypatch.setattr(filecheck, "WHOLE_FILE_LIMIT", 4096)
    monkeypatch.setattr(filecheck, "HEADER_LIMIT", 3000)
    monkeypatch.setattr(filecheck, "CHUNK", 1000)
    recs = stored(archive)
    big = [r for r in recs if r["size"] > 4096]
    assert len(big) >= 6
    content = filecheck.read_content(archive.path_of(big[0]["path"]))
    assert (content.size, content.sha256, len(content.head)) == (big[0]["size"], big[0]["sha256"], 3000)
    assert verify_archive(archive, jobs=1).summary.ok
    flip_bit(archive.path_of(big[0]["path"]), offset=big[0]["size"] - 10)
    assert [f.problem for f in verify_archive(archive, jobs=1).findings] == [F.HASH_MISMATCH]
    flip_bit(archive.path_of(big[0]["path"]), offset=big[0]["size"] - 10)  # healed
    before = sorted(archive.index.instances(), key=lambda r: r["path"])
    assert reindex(archive, jobs=1).ok
    assert sorted(archive.index.instances(), key=lambda r: r["path"]) == before


def test_a_header_longer_than_the_head_kept_is_read_from_the_file(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacsctl.integrity import filecheck

    monkeypatch.setattr(filecheck, "WHOLE_FILE_LIMIT", 4096)
    monkeypatch.setattr(filecheck, "HEADER_LIMIT", 200)  # cuts the File Meta header itself
    report = verify_archive(archive, jobs=1)
    assert report.findings == [] and report.summary.hashed == 9


def _record_bytes_as_ingested(archive: Archive, rec: dict, data: bytes) -> None:
    """Make the index record `data` as the file's ingest size and hash: only the header check
    can then tell that the file is damaged."""
    import hashlib

    archive.path_of(rec["path"]).write_bytes(data)
    archive.index.add([{**rec, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}])
    archive.index.flush()


@pytest.mark.parametrize(("damage", "problem"), [
    ("cut in the SOP Instance UID", F.UID_MISMATCH),  # pydicom reads what is left of the value
    ("element length past the end", F.UID_MISMATCH),
    ("not DICOM", F.UNREADABLE),
])
def test_a_damaged_header_with_the_recorded_hash_is_found(archive: Archive, damage: str,
                                                          problem: str) -> None:
    """The raw header scan declines damage and pydicom's path judges it, as before the scan."""
    rec = sorted(archive.index.instances(), key=lambda r: r["path"])[0]  # a generated CT
    data = archive.path_of(rec["path"]).read_bytes()
    uid = rec["SOPInstanceUID"].encode()
    at = data.rindex(uid)  # in the data set (the first one is in the File Meta header)
    if damage == "cut in the SOP Instance UID":
        data = data[:at + 5]
    elif damage == "element length past the end":  # the UID element's 2-byte length, explicit VR
        data = data[:at - 2] + (0xFFF0).to_bytes(2, "little") + data[at:]
    else:
        data = b"\x00" * len(data)
    _record_bytes_as_ingested(archive, rec, data)
    [finding] = verify_archive(archive, jobs=1).findings
    assert (finding.problem, finding.path) == (problem, rec["path"])
    expected = "DICOM header: " if problem == F.UNREADABLE else "file holds SOP Instance UID"
    assert finding.detail.startswith(expected)


def test_plain_files_are_checked_without_pydicom(archive_dir: Path, ct_factory: Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain explicit VR files: the raw scan checks the header on the bytes hashed, pydicom's
    parse (ten times slower) is not run."""
    from pacsctl.integrity import filecheck

    def no_pydicom(_source: object) -> None:
        raise AssertionError("pydicom's parse ran on a plain file")

    with make_archive(archive_dir, ct_factory.series(3)) as arch:
        monkeypatch.setattr(filecheck, "read_header", no_pydicom)
        report = verify_archive(arch, jobs=1)
    assert report.findings == [] and report.summary.hashed == 3


def test_walk_names_files_relative_to_the_root_however_the_root_is_given(
        archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    from pacsctl.integrity.filecheck import walk_objects

    paths = sorted(walk_objects(archive.root))
    assert paths == sorted(r["path"] for r in archive.index.iter_instances())
    monkeypatch.chdir(archive.root.parent)
    assert sorted(walk_objects(Path(archive.root.name))) == paths
    monkeypatch.chdir(archive.root)
    assert sorted(walk_objects(Path("."))) == paths
