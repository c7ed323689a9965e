"""`backup`: an incremental, verifiable replica of the archive in another folder.

DEST is laid out like an archive (`pacsctl.toml`, `objects/...`, `tmp/`), plus the manifest
(`backup-manifest.ndjson`: SOP Instance UID, path, size, SHA-256 of every file), so it can be
checked alone (`pacsctl verify --backup DEST`) and restored even if the archive is gone
(`pacsctl --archive DEST reindex`).

- Consistent snapshot: the file list is the index as it was when the backup started. The index
  only records an instance once its file is durable, so a writer (a running `serve`) adding
  files meanwhile never shows up half-written; its files go into the next backup.
- Incremental: a file whose manifest entry (size, SHA-256) matches the archive's record and
  whose copy has that size is skipped.
- Every copy is hashed while it is written and only renamed into place when it matches the
  hash recorded at ingest, so bit rot in the archive never overwrites a good copy. Copies are
  written to DEST/tmp, made durable in batches (one `syncfs` of DEST per batch), renamed, and
  only then listed by the manifest, which is written last and atomically.
- Files the archive no longer has stay in the backup and in its manifest.
- A full backup disk stops the run: what was copied is listed, the rest counted as failed.
- Files in objects/ that the index does not know (a lost or stale index) cannot be part of the
  snapshot; they are reported (`unindexed`, exit 3) rather than passed over in silence.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pacsctl.archive.archive import AUDIT_LOG, INDEX, OBJECTS, QUARANTINE, TMP, Archive
from pacsctl.config import CONFIG_NAME
from pacsctl.errors import PacsctlError, UsageError
from pacsctl.integrity import findings as F
from pacsctl.integrity.filecheck import Expected, clean_leftovers, recorded_files
from pacsctl.integrity.findings import Finding
from pacsctl.integrity.manifest import MANIFEST_NAME, Manifest, locked_backup, read_manifest, write_manifest
from pacsctl.integrity.verify import unindexed_files
from pacsctl.storage import files
from pacsctl.storage.locks import LockHolder
from pacsctl.summary import SummaryRecord

CHECKPOINT_SECONDS = 60.0  # the manifest is rewritten this often, so an interrupted run keeps its work
READ_CHUNK = 4 << 20
# Copies made durable together (one flush of DEST instead of one per file); an interrupted
# run re-copies at most one batch.
BATCH_FILES = 4096
BATCH_BYTES = 2 << 30

Progress = Callable[[int, int], None]  # (files done, bytes copied) since the last call


@dataclass
class BackupSummary(SummaryRecord):
    """The closing record of a backup."""

    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    instances: int = 0  # entries in the manifest afterwards
    other_files: int = 0  # quarantine and audit log files copied (not instances; no manifest)
    unindexed: int = 0  # files in objects/ the index does not know: not backed up
    elapsed: float = 0.0


@dataclass
class BackupReport:
    """Findings (copies that failed, leftovers cleaned in DEST) and the summary."""

    findings: list[Finding] = field(default_factory=list)
    summary: BackupSummary = field(default_factory=BackupSummary)

    @property
    def ok(self) -> bool:
        """Whether every file of the archive is in the backup (exit 0; else 3)."""
        return self.summary.failed == 0 and self.summary.unindexed == 0


class _CopyMismatch(Exception):
    """The bytes read from the archive are not the ones recorded for the file."""


class _DiskFull(Exception):
    """DEST has no room left; `remaining` files were not copied."""

    def __init__(self, remaining: list[Expected]) -> None:
        super().__init__("backup disk full")
        self.remaining = remaining


def backup(
    archive: Archive,
    dest: Path,
    *,
    jobs: int | None = None,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = lambda files, nbytes: None,
    wait: bool = False,
    on_wait: Callable[[LockHolder | None], None] = lambda holder: None,
) -> BackupReport:
    """Bring the backup in `dest` up to date with what the archive held when this started.

    One run at a time per folder: while another backup or `verify --backup` holds it, a
    LockBusy (exit 1) naming that run, or with `wait` a wait for it (`on_wait` told once)."""
    started = time.monotonic()
    dest = _prepare_dest(archive.root, Path(dest))
    try:
        with locked_backup(dest, "backup", wait=wait, on_wait=on_wait):
            report = _backup(archive, dest, jobs, on_total, progress)
    except OSError as exc:  # DEST failed as a whole (disk full, I/O error, gone): one clear line
        raise PacsctlError(
            f"backup to {dest} failed: {_os_reason(exc)}",
            hint="check the backup disk; what was listed in the manifest is safe",
        ) from None
    report.summary.elapsed = time.monotonic() - started
    return report


def _backup(
    archive: Archive, dest: Path, jobs: int | None, on_total: Callable[[int], None], progress: Progress
) -> BackupReport:
    """The run, under the folder's lock (taken by the caller)."""
    report = BackupReport()
    report.findings += clean_leftovers(dest / TMP, dest, F.BACKUP)
    snapshot = snapshot_files(archive)
    previous = read_manifest(dest) or Manifest()
    run = _Run(archive, dest, previous.entries, report, progress)
    todo = run.plan(sorted(snapshot.values(), key=lambda e: e.path))
    on_total(len(snapshot))
    progress(report.summary.skipped, 0)
    try:
        run.copy_all(todo, jobs or max(4, 2 * (os.cpu_count() or 1)))
    except _DiskFull as full:
        run.fail_rest(full.remaining, "the backup disk is full")
    except BaseException:  # Ctrl-C, an I/O error: keep and list what was copied
        with contextlib.suppress(OSError):
            run.commit()
        _remove_own_temps(dest / TMP)
        raise
    run.commit()
    _remove_own_temps(dest / TMP)
    _copy_config(archive.root, dest)
    report.summary.other_files = _mirror_others(archive.root, dest)
    # What the index does not know is not backed up: say so (a lost index must not pass silently).
    unindexed = unindexed_files(archive, snapshot.keys())
    for finding in unindexed:
        finding.detail += "; not backed up"
    report.findings += unindexed
    report.summary.unindexed = len(unindexed)
    report.summary.instances = len(run.entries)
    return report


def snapshot_files(archive: Archive) -> dict[str, Expected]:
    """What a backup takes: every indexed file by path, with its study and series UIDs (so that
    the manifest can restore one study). The instance records are the snapshot; the study and
    series of each come from the study records (instance records do not repeat them)."""
    snapshot = recorded_files(archive.index.iter_instances())
    for rec in archive.index.instances():
        expected = snapshot.get(str(rec.get("path") or ""))
        if expected is not None:
            expected.study_uid = str(rec.get("StudyInstanceUID") or "")
            expected.series_uid = str(rec.get("SeriesInstanceUID") or "")
    return snapshot


def recopy(archive: Archive, dest: Path, wanted: list[Expected], threads: int = 4) -> dict[str, str]:
    """Copy `wanted` files from the archive into the backup in `dest` again, over damaged copies
    (the caller holds the backup's lock). Returns why, for each file that could not be copied."""
    report = BackupReport()
    run = _Run(archive, dest, (read_manifest(dest) or Manifest()).entries, report, lambda files, nbytes: None)
    try:
        run.copy_all(wanted, threads)
    except _DiskFull as full:
        run.fail_rest(full.remaining, "the backup disk is full")
    finally:
        run.commit()
        _remove_own_temps(dest / TMP)
    reasons = {f.path: f.detail for f in report.findings if f.path}
    return {
        e.path: reasons.get(e.path, "the backup disk is full") for e in wanted if e.path not in run.published
    }


class _Run:
    """One backup run: the manifest being built and the copying."""

    def __init__(
        self,
        archive: Archive,
        dest: Path,
        previous: dict[str, Expected],
        report: BackupReport,
        progress: Progress,
    ) -> None:
        self.archive, self.dest, self.report, self.progress = archive, dest, report, progress
        self.previous = previous
        self.entries: dict[str, Expected] = dict(previous)  # kept: files the archive lost
        self.dirs: set[Path] = set()
        self.published: set[str] = set()  # paths copied by this run
        self.last_checkpoint = time.monotonic()

    def plan(self, snapshot: Iterable[Expected]) -> list[Expected]:
        """What must be copied; the rest is counted as skipped."""
        todo = []
        for expected in snapshot:
            old = self.previous.get(expected.path)
            if (
                old is not None
                and (old.size, old.sha256) == (expected.size, expected.sha256)
                and _size(self.dest / expected.path) == expected.size
            ):
                self.report.summary.skipped += 1
                self.entries[expected.path] = expected
            else:
                todo.append(expected)
        return todo

    def copy_all(self, todo: list[Expected], threads: int) -> None:
        """Copy files in batches with one durability barrier each (group commit).

        A batch is staged in DEST/tmp by threads (reads, writes and hashing release the GIL),
        made durable at once, then renamed into place. Raises _DiskFull when DEST is full.
        """
        mismatched: list[Expected] = []
        done = 0
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for batch in _batches(todo):
                staged, no_room = [], []
                for expected, result in pool.map(self._stage, batch):
                    if isinstance(result, files.StagedFile):
                        staged.append((expected, result))
                    elif isinstance(result, _CopyMismatch):
                        mismatched.append(expected)
                    elif isinstance(result, OSError) and result.errno in (errno.ENOSPC, errno.EDQUOT):
                        no_room.append(expected)
                    else:
                        self.fail(expected, result)
                make_durable(self.dest, [s.temp_path for _, s in staged])  # keep what fitted
                for expected, stage in staged:
                    self._publish(expected, stage)
                done += len(batch)
                if no_room:
                    raise _DiskFull(no_room + todo[done:])
                if time.monotonic() - self.last_checkpoint > CHECKPOINT_SECONDS:
                    self.commit()
        if mismatched:
            self._retry_replaced(mismatched)

    def _retry_replaced(self, mismatched: list[Expected]) -> None:
        """Copy again files replaced since the snapshot (on-conflict replace); fail the rest."""
        fresh = recorded_files(self.archive.index.iter_instances())
        replaced = [fresh[e.path] for e in mismatched if e.path in fresh and fresh[e.path].sha256 != e.sha256]
        rotten = [e for e in mismatched if not (e.path in fresh and fresh[e.path].sha256 != e.sha256)]
        for expected, result in map(self._stage, replaced):
            if isinstance(result, files.StagedFile):
                make_durable(self.dest, [result.temp_path])
                self._publish(expected, result)
            else:
                rotten.append(expected)
        for expected in rotten:
            self.fail(
                expected,
                "the archive's file does not match the hash recorded at ingest (run `pacsctl verify`)",
            )

    def _stage(self, expected: Expected) -> tuple[Expected, files.StagedFile | Exception]:
        """Copy one file into DEST/tmp, hashing it on the way; not yet durable nor named."""
        source = self.archive.path_of(expected.path)
        try:
            with open(source, "rb", buffering=0) as fh:
                staged = files.stage(self.dest / TMP, iter(lambda: fh.read(READ_CHUNK), b""), fsync=False)
        except FileNotFoundError as exc:
            if exc.filename is not None and Path(exc.filename) == source:
                return expected, FileNotFoundError("the archive's file is missing (run `pacsctl verify`)")
            return expected, exc
        except OSError as exc:
            return expected, exc
        if (staged.size, staged.sha256) != (expected.size, expected.sha256):
            staged.temp_path.unlink(missing_ok=True)
            return expected, _CopyMismatch()
        return expected, staged

    def _publish(self, expected: Expected, stage: files.StagedFile) -> None:
        target = self.dest / expected.path
        try:
            files.publish(stage, target, replace=True)
        except OSError as exc:
            stage.temp_path.unlink(missing_ok=True)
            self.fail(expected, _os_reason(exc))
            return
        self.dirs.add(target.parent)
        self.published.add(expected.path)
        self.entries[expected.path] = expected
        self.report.summary.copied += 1
        self.report.summary.bytes += expected.size
        self.progress(1, expected.size)

    def fail(self, expected: Expected, reason: str | Exception) -> None:
        """Count a file that could not be backed up; an older good copy stays listed."""
        if isinstance(reason, OSError):
            reason = _os_reason(reason)
        self.report.summary.failed += 1
        self.report.findings.append(
            Finding(expected.path, F.COPY_FAILED, str(reason), expected.sop_instance_uid, F.BACKUP)
        )
        self.progress(1, 0)

    def fail_rest(self, remaining: list[Expected], reason: str) -> None:
        """Stop: count every file not copied as failed, with one finding for them all."""
        self.report.summary.failed += len(remaining)
        self.report.findings.append(
            Finding("", F.COPY_FAILED, f"{reason}: {len(remaining)} files not copied", where=F.BACKUP)
        )
        self.progress(len(remaining), 0)

    def commit(self) -> None:
        """Make the copies' names durable, then list them in the manifest (atomically)."""
        dirs, self.dirs = self.dirs, set()
        if not files.syncfs(self.dest):
            for folder in sorted(dirs):
                files.fsync_dir(folder)
        write_manifest(self.dest, self.dest / TMP, self.entries.values())
        self.last_checkpoint = time.monotonic()


def _batches(todo: list[Expected]) -> Iterable[list[Expected]]:
    """`todo` in batches of at most BATCH_FILES files and about BATCH_BYTES bytes."""
    batch: list[Expected] = []
    size = 0
    for expected in todo:
        batch.append(expected)
        size += expected.size
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def make_durable(dest: Path, paths: list[Path]) -> None:
    """Flush written files to disk: one `syncfs` of DEST's file system, else an fsync each.

    One syncfs costs about what one fsync does, so a batch of copies is durable for the price
    of one (measured here: 1000 copies in 1.2 s instead of 2.6 s with an fsync each).
    """
    if paths and not files.syncfs(dest):
        files.make_durable(paths)


def _prepare_dest(archive_root: Path, dest: Path) -> Path:
    """Check DEST is not the archive or inside it, nor a folder of something else; create it."""
    dest = dest.expanduser().absolute()
    real_dest, real_root = dest.resolve(), archive_root.resolve()
    if real_dest == real_root or real_dest.is_relative_to(real_root) or real_root.is_relative_to(real_dest):
        raise UsageError(
            f"backup folder {dest} overlaps the archive {archive_root}",
            hint="back up to another folder, ideally another disk",
        )
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest} is not a folder")
    if not dest.exists() and not dest.parent.is_dir():  # e.g. the backup disk is not mounted
        raise UsageError(
            f"no folder {dest.parent}",
            hint="is the backup disk mounted? DEST itself is created, its parent must exist",
        )
    known = (MANIFEST_NAME, OBJECTS, CONFIG_NAME)
    if dest.is_dir() and any(dest.iterdir()) and not any((dest / name).exists() for name in known):
        raise UsageError(
            f"{dest} is not empty and not a pacsctl backup", hint="choose an empty or new folder"
        )
    if (dest / INDEX).is_dir() and not (dest / MANIFEST_NAME).exists():
        raise UsageError(
            f"{dest} is a pacsctl archive, not a backup", hint="back up to an empty or new folder"
        )
    for sub in (OBJECTS, TMP):
        files.ensure_dir(dest / sub)
    return dest


def _copy_config(archive_root: Path, dest: Path) -> None:
    """Copy `pacsctl.toml`, so DEST opens as an archive (`pacsctl --archive DEST reindex`)."""
    config = archive_root / CONFIG_NAME
    if config.exists():
        files.write_atomic(dest / TMP, dest / CONFIG_NAME, config.read_bytes())


def _mirror_others(archive_root: Path, dest: Path) -> int:
    """Copy the quarantine (named by content, never changed) and the audit log when they grew.

    Not instances, so not in the manifest; copied so that nothing received is lost with the
    archive. Returns the number of files copied.
    """
    sources = [p for p in sorted((archive_root / QUARANTINE).rglob("*")) if p.is_file()]
    sources += [p for p in (archive_root / AUDIT_LOG,) if p.is_file()]
    staged = []
    for source in sources:
        relpath = source.relative_to(archive_root)
        try:
            if _size(dest / relpath) == source.stat().st_size:
                continue
            with open(source, "rb", buffering=0) as fh:
                staged.append(
                    (relpath, files.stage(dest / TMP, iter(lambda: fh.read(READ_CHUNK), b""), fsync=False))
                )
        except FileNotFoundError:  # released from quarantine meanwhile
            continue
    make_durable(dest, [s.temp_path for _, s in staged])
    for relpath, stage in staged:
        files.publish(stage, dest / relpath, replace=True)
    if staged and not files.syncfs(dest):
        for folder in {(dest / r).parent for r, _ in staged}:
            files.fsync_dir(folder)
    return len(staged)


def _remove_own_temps(tmp_dir: Path) -> None:
    """Remove this process's temp files in DEST/tmp (copies staged but never published)."""
    for path in tmp_dir.glob(f"{os.getpid()}-*"):
        path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the backup disk is full"
    return str(exc.strerror or exc)
