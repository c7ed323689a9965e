"""`backup`: an incremental, verifiable, restorable replica, consistent while another process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pacsctl.config import CONFIG_NAME
from pacsctl.integrity import findings as F
from pacsctl.archive.archive import Archive
from pacsctl.integrity.backup import backup
from pacsctl.integrity.manifest import read_manifest
from pacsctl.integrity.reindex import reindex
from pacsctl.integrity.verify import verify_archive, verify_backup
from pacsctl.errors import PacsctlError, UsageError
from pacsctl.storage.files import sha256_file
from tests.integrity.test_verify import dead_pid, flip_bit, make_archive, stored
from tests.helpers import REPO_ROOT


@pytest.fixture
def archive(archive_dir: Path, ct_factory: Any, dicom_test_files: list[Path]) -> Archive:
    extra = [p for p in dicom_test_files if p.name in ("ExplVR_BigEnd.dcm", "rtplan.dcm")]
    arch = make_archive(archive_dir, ct_factory.series(5, patient_id="P1") + extra)
    yield arch
    arch.close()


def test_first_backup_copies_everything_with_a_manifest(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "pacs"
    report = backup(archive, dest)
    s = report.summary
    assert (s.copied, s.skipped, s.failed, s.instances) == (7, 0, 0, 7) and report.ok
    recs = stored(archive)
    assert s.bytes == sum(r["size"] for r in recs)
    manifest = read_manifest(dest)
    assert manifest is not None and manifest.damage == []
    assert {p: (e.size, e.sha256, e.sop_instance_uid) for p, e in manifest.entries.items()} == {
        r["path"]: (r["size"], r["sha256"], r["SOPInstanceUID"]) for r in recs
    }
    for rec in recs:
        copy = dest / rec["path"]
        assert copy.read_bytes() == archive.path_of(rec["path"]).read_bytes()
        assert copy.stat().st_mode & 0o777 == 0o600
        assert copy.parent.stat().st_mode & 0o777 == 0o700
    assert (dest / CONFIG_NAME).read_bytes() == (archive.root / CONFIG_NAME).read_bytes()
    assert not list((dest / "tmp").iterdir())
    # Plain NDJSON, one object a line, closed by an end line.
    lines = [json.loads(line) for line in (dest / "backup-manifest.ndjson").read_text().splitlines()]
    assert lines[0]["format"] == "pacsctl-backup-manifest" and lines[-1] == {"end": True, "instances": 7}


def test_backup_is_incremental(archive: Archive, tmp_path: Path, ct_factory: Any) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    again = backup(archive, dest).summary
    assert (again.copied, again.skipped, again.bytes) == (0, 7, 0)
    new = ct_factory(patient_id="P2")
    archive.ingest([(new.read_bytes(), str(new))])
    third = backup(archive, dest).summary
    assert (third.copied, third.skipped, third.bytes, third.instances) == (1, 7, new.stat().st_size, 8)


def test_a_lost_or_damaged_backup_copy_is_copied_again(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    recs = stored(archive)
    (dest / recs[0]["path"]).unlink()
    os.truncate(dest / recs[1]["path"], 10)
    s = backup(archive, dest).summary
    assert (s.copied, s.skipped) == (2, 5)
    assert verify_backup(dest, archive).summary.ok


def test_bit_rot_in_the_archive_never_overwrites_a_good_copy(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    rec = stored(archive)[0]
    good = (dest / rec["path"]).read_bytes()
    (dest / rec["path"]).unlink()  # force a copy attempt
    flip_bit(archive.path_of(rec["path"]))
    report = backup(archive, dest)
    assert not report.ok and report.summary.failed == 1
    [finding] = report.findings
    assert (finding.problem, finding.path, finding.sop_instance_uid) == (F.COPY_FAILED, rec["path"], rec["SOPInstanceUID"])
    assert "does not match the hash recorded" in finding.detail
    assert not (dest / rec["path"]).exists()  # nothing damaged was published
    # With the copy still present, the good copy stays untouched and listed.
    (dest / rec["path"]).write_bytes(good)
    backup(archive, dest)
    assert (dest / rec["path"]).read_bytes() == good
    assert read_manifest(dest).entries[rec["path"]].sha256 == rec["sha256"]


def test_missing_archive_file_is_a_partial_failure(archive: Archive, tmp_path: Path) -> None:
    rec = stored(archive)[0]
    archive.path_of(rec["path"]).unlink()
    report = backup(archive, tmp_path / "backup")
    assert report.summary.failed == 1 and report.summary.copied == 6
    assert report.findings[0].problem == F.COPY_FAILED and "missing" in report.findings[0].detail


def test_leftovers_of_an_interrupted_backup_are_cleaned(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    backup(archive, dest)
    leftover = dest / "tmp" / f"{dead_pid()}-00ff.part"
    leftover.write_bytes(b"half a copy")
    report = backup(archive, dest)
    assert report.ok and not leftover.exists()
    assert [(f.problem, f.action, f.where) for f in report.findings] == [(F.LEFTOVER_TEMP, F.REMOVED, F.BACKUP)]


@pytest.mark.parametrize("where", ["archive", "inside", "parent"])
def test_dest_must_not_overlap_the_archive(archive: Archive, where: str) -> None:
    dest = {"archive": archive.root, "inside": archive.root / "backup", "parent": archive.root.parent}[where]
    with pytest.raises(UsageError):
        backup(archive, dest)


def test_dest_of_something_else_is_refused(archive: Archive, tmp_path: Path) -> None:
    other = tmp_path / "home"
    other.mkdir()
    (other / "thesis.pdf").write_bytes(b"%PDF")
    with pytest.raises(UsageError):
        backup(archive, other)
    with pytest.raises(UsageError, match="mounted"):
        backup(archive, tmp_path / "unmounted" / "pacs")
    Archive.open(tmp_path / "another-archive").close()
    with pytest.raises(UsageError, match="archive, not a backup"):
        backup(archive, tmp_path / "another-archive")


def test_restore_from_backup_alone(archive: Archive, tmp_path: Path) -> None:
    """The archive is gone: `reindex` on the backup folder makes it an archive again."""
    dest = tmp_path / "backup"
    backup(archive, dest)
    before = sorted(archive.index.instances(), key=lambda r: r["path"])
    studies = archive.index.studies()

    with Archive.open(dest, create=False) as restored:
        report = reindex(restored, jobs=2)
        assert report.ok and report.summary.indexed == 7 and report.summary.checked_against_manifest == 7
        assert sorted(restored.index.instances(), key=lambda r: r["path"]) == before
        assert sorted(s["StudyInstanceUID"] for s in restored.index.studies()) == sorted(s["StudyInstanceUID"] for s in studies)
        assert verify_archive(restored).summary.ok


WRITER = r"""
import sys, time
from pathlib import Path
from benchmarks.corpus import make_ct
from pacsctl.archive.archive import Archive

root, work, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
archive = Archive.open(root)
n = 0
while not stop.exists() and n < 2000:
    path = make_ct(work / f"w{n}.dcm", patient_id="WRITER", instance_number=n + 1, pixel_seed=n, rows=32, cols=32)
    [result] = archive.ingest([(path.read_bytes(), str(path))])
    assert result.status == "stored", result
    n += 1
    print(n, flush=True)
archive.close()
"""


def test_backup_while_another_process_writes_restores_cleanly(archive: Archive, tmp_path: Path) -> None:
    """A writer in another process stores instances all through the backup (as `serve` would)."""
    dest, stop = tmp_path / "backup", tmp_path / "stop"
    (tmp_path / "w").mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(archive.root), str(tmp_path / "w"), str(stop)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        for _ in range(5):  # it is writing
            assert writer.stdout.readline()
        before = {r["path"] for r in archive.index.iter_instances()}
        report = backup(archive, dest, jobs=2)
        during = writer.poll() is None
        after_backup = {r["path"] for r in archive.index.iter_instances()}
    finally:
        stop.touch()
        writer.wait(60)
    assert writer.returncode == 0 and during
    assert report.ok
    manifest = read_manifest(dest)
    assert manifest.damage == []
    # Everything committed when the backup started is in it; nothing listed that is not whole.
    assert before <= manifest.entries.keys() <= after_backup
    for path, entry in manifest.entries.items():
        assert sha256_file(dest / path) == (entry.size, entry.sha256)
    with Archive.open(dest, create=False) as restored:
        result = reindex(restored, jobs=1)
        assert result.ok and result.summary.indexed == len(manifest.entries)
        assert verify_archive(restored).summary.ok
    # The next backup picks up what was written meanwhile.
    backup(archive, dest)
    assert read_manifest(dest).entries.keys() == {r["path"] for r in archive.index.iter_instances()}


def test_backup_is_locked_against_a_second_run(archive: Archive, tmp_path: Path) -> None:
    import fcntl

    dest = tmp_path / "backup"
    backup(archive, dest)
    fd = os.open(dest / "backup.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(PacsctlError, match="in use"):
            backup(archive, dest)
    finally:
        os.close(fd)
    time.sleep(0)  # released: runs again
    assert backup(archive, dest).ok


def test_quarantine_and_audit_log_are_copied_too(archive: Archive, tmp_path: Path, broken_dicom_files: list[Path]) -> None:
    [result] = archive.ingest([(broken_dicom_files[0].read_bytes(), "cd")])
    assert result.status == "quarantined"
    (archive.root / "audit.log").write_text('{"event": "store"}\n')
    dest = tmp_path / "backup"
    report = backup(archive, dest)
    assert report.summary.other_files == 3  # the quarantined file, its reason, the audit log
    assert (dest / result.path).read_bytes() == broken_dicom_files[0].read_bytes()
    assert (dest / "audit.log").read_text() == '{"event": "store"}\n'
    assert backup(archive, dest).summary.other_files == 0
    with (archive.root / "audit.log").open("a") as log:
        log.write('{"event": "find"}\n')
    assert backup(archive, dest).summary.other_files == 1
    assert verify_backup(dest, archive).summary.ok  # not instances: not in the manifest, not unknown


def test_file_replaced_during_the_backup_is_copied_in_its_new_version(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ct_factory: Any
) -> None:
    """On-conflict replace swaps a file after the snapshot: the new version is backed up."""
    from pacsctl.integrity import backup as backup_module

    rec = sorted(archive.index.instances(), key=lambda r: r["path"])[0]
    newer = ct_factory(sop_uid=rec["SOPInstanceUID"], study_uid=rec["StudyInstanceUID"], series_uid=rec["SeriesInstanceUID"], pixel_seed=7)
    plan = backup_module._Run.plan

    def plan_then_replace(self: Any, snapshot: Any) -> Any:
        todo = plan(self, snapshot)
        [result] = archive.ingest([(newer.read_bytes(), str(newer))], on_conflict="replace")
        assert result.status == "stored"
        return todo

    monkeypatch.setattr(backup_module._Run, "plan", plan_then_replace)
    dest = tmp_path / "backup"
    report = backup(archive, dest)
    assert report.ok and report.summary.copied == 7
    assert (dest / rec["path"]).read_bytes() == newer.read_bytes()
    assert read_manifest(dest).entries[rec["path"]].sha256 == sha256_file(newer)[1]


def test_interrupted_backup_keeps_what_it_copied_and_completes_on_rerun(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pacsctl.integrity import backup as backup_module

    publish = backup_module._Run._publish
    calls = []

    def publish_then_interrupt(self: Any, expected: Any, stage: Any) -> None:
        publish(self, expected, stage)
        calls.append(expected.path)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(backup_module._Run, "_publish", publish_then_interrupt)
    dest = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        backup(archive, dest)
    manifest = read_manifest(dest)
    assert manifest.damage == [] and sorted(manifest.entries) == sorted(calls)
    assert not list((dest / "tmp").iterdir())  # the staged rest of the batch is gone
    monkeypatch.setattr(backup_module._Run, "_publish", publish)
    report = backup(archive, dest)
    assert (report.summary.skipped, report.summary.copied) == (3, 4)
    assert verify_backup(dest, archive).summary.ok


@pytest.fixture
def small_fs(tmp_path: Path):
    """A real 1 MiB file system (tmpfs) for DEST, unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_backup_disk_stops_lists_what_was_copied_and_resumes(archive: Archive, small_fs: Path, ct_factory: Any) -> None:
    big = ct_factory.series(12, patient_id="BIG", rows=256, cols=256)  # 128 kB each: 1.5 MiB in all
    archive.ingest([(p.read_bytes(), str(p)) for p in big])
    dest = small_fs / "pacs"

    report = backup(archive, dest, jobs=2)

    s = report.summary
    assert not report.ok and s.failed > 0 and s.copied > 0 and s.copied + s.failed == 19
    [finding] = report.findings
    assert finding.problem == F.COPY_FAILED and "disk is full" in finding.detail
    manifest = read_manifest(dest)
    assert manifest.damage == [] and len(manifest.entries) == s.copied
    for path, entry in manifest.entries.items():  # what is listed is whole
        assert sha256_file(dest / path) == (entry.size, entry.sha256)
    assert not list((dest / "tmp").iterdir())

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_fs)], check=True)
    again = backup(archive, dest, jobs=2)
    assert again.ok and again.summary.copied == s.failed and again.summary.skipped == s.copied
    assert verify_backup(dest, archive).summary.ok


def test_files_the_index_does_not_know_are_reported_not_skipped_silently(archive: Archive, tmp_path: Path) -> None:
    """A lost index must not make a backup that copies nothing and says all is well."""
    shutil.rmtree(archive.root / "index" / "series")
    shutil.rmtree(archive.root / "index" / "studies")
    report = backup(archive, tmp_path / "backup")
    assert not report.ok and report.summary.unindexed == 7 and report.summary.copied == 0
    assert {f.problem for f in report.findings} == {F.UNKNOWN_FILE}
    assert all("not backed up" in f.detail and f.sop_instance_uid for f in report.findings)
    assert reindex(archive).ok
    fixed = backup(archive, tmp_path / "backup")
    assert fixed.ok and fixed.summary.copied == 7
