"""`restore SOURCE`: rebuild an archive from a backup alone (a backup folder or `s3://`).

Whole: into a new or empty folder. Every instance the manifest lists is copied back, hashed on
the way and only kept when it matches the manifest's SHA-256; copies are made durable in
batches (one `syncfs`), then named; the config, quarantine and audit log follow; the index is
rebuilt from the files (`integrity/reindex`) and the archive verified. A marker file
(`restore-in-progress`) lets an interrupted restore be run again into the same folder: what is
already in place with the manifest's size is kept (it was checked before it was named).

Part (`study_uids` / `filters`): into an existing archive, through the archive's own ingest
(so the index and duplicates are handled as for any import): what was deleted by mistake.
Study, series and SOP Instance UIDs are taken from the manifest; other keys (PatientID, dates)
are matched against each downloaded instance's header, which reads the whole backup.

Anything that could not be restored is a finding with its reason (exit 3 for the CLI).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pacsctl.archive.archive import AUDIT_LOG, INDEX, OBJECTS, QUARANTINE, TMP, Archive
from pacsctl.config import CONFIG_NAME
from pacsctl.errors import PacsctlError, UsageError
from pacsctl.integrity import findings as F
from pacsctl.integrity.backup import make_durable
from pacsctl.integrity.filecheck import Expected
from pacsctl.integrity.findings import Finding
from pacsctl.integrity.manifest import LOCK_NAME, MANIFEST_NAME, Manifest, read_manifest
from pacsctl.integrity.reindex import reindex
from pacsctl.integrity.verify import VerifyReport, verify_archive
from pacsctl.storage import files, locks
from pacsctl.storage.objects import ObjectStore, ObjectStoreError, ObjectStoreFailure
from pacsctl.summary import SummaryRecord

MARKER = "restore-in-progress"
BATCH_FILES = 256  # copies made durable together; an interrupted restore redoes at most a batch
UID_KEYS = {
    "StudyInstanceUID": "study_uid",
    "SeriesInstanceUID": "series_uid",
    "SOPInstanceUID": "sop_instance_uid",
}
DEFAULT_THREADS = 8

Progress = Callable[[int, int], None]  # (instances done, bytes copied) since the last call


class BackupSource(Protocol):
    """Where a backup is read from: its manifest, an object's bytes, the other files it keeps."""

    name: str

    def manifest(self) -> Manifest | None:
        """The backup's manifest, or None when the source holds none."""

    def chunks(self, relpath: str) -> Iterator[bytes]:
        """The bytes of one file; raises FileNotFoundError when the backup lacks it."""

    def others(self) -> list[str]:
        """Relative paths of what the backup keeps besides instances (config, quarantine, audit log)."""


class FolderSource:
    """A backup folder (`pacsctl backup DEST`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.name = str(self.root)

    def manifest(self) -> Manifest | None:
        """The folder's manifest."""
        return read_manifest(self.root)

    def chunks(self, relpath: str) -> Iterator[bytes]:
        """The file's bytes, a MiB at a time."""
        with open(self.root / relpath, "rb", buffering=0) as fh:
            yield from iter(lambda: fh.read(1 << 20), b"")

    def others(self) -> list[str]:
        """Config, quarantine and audit log in the folder."""
        found = [p for p in (CONFIG_NAME, AUDIT_LOG) if (self.root / p).is_file()]
        quarantine = self.root / QUARANTINE
        found += sorted(p.relative_to(self.root).as_posix() for p in quarantine.rglob("*") if p.is_file())
        return found


class BucketSource:
    """A bucket backup (`pacsctl backup s3://BUCKET/PREFIX`)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.name = str(store.url)

    def manifest(self) -> Manifest | None:
        """The bucket's manifest object."""
        from pacsctl.integrity.offsite import read_bucket_manifest

        return read_bucket_manifest(self.store)

    def chunks(self, relpath: str) -> Iterator[bytes]:
        """The object's bytes, streamed."""
        try:
            yield from self.store.iter_chunks(relpath)
        except ObjectStoreError as exc:
            if exc.failure is ObjectStoreFailure.NOT_FOUND:
                raise FileNotFoundError(relpath) from None
            raise

    def others(self) -> list[str]:
        """Config, quarantine and audit log objects."""
        keep = (CONFIG_NAME, AUDIT_LOG)
        return sorted(
            o.relpath
            for o in self.store.iter_objects()
            if o.relpath in keep or o.relpath.startswith(f"{QUARANTINE}/")
        )


@dataclass
class RestoreSummary(SummaryRecord):
    """The closing record of a restore."""

    source: str = ""
    selected: int = 0  # instances the restore was to bring back
    restored: int = 0
    present: int = 0  # already in place (a resumed restore) or already archived (a partial one)
    failed: int = 0
    not_matching: int = 0  # -k: downloaded, checked, and not of the selection
    bytes: int = 0
    other_files: int = 0
    indexed: int = 0
    verified: bool = False  # the restored archive passed a full verify
    elapsed: float = 0.0


@dataclass
class RestoreReport:
    """One finding per instance that could not be restored, and the summary."""

    findings: list[Finding] = field(default_factory=list)
    summary: RestoreSummary = field(default_factory=RestoreSummary)
    verify: VerifyReport | None = None

    @property
    def ok(self) -> bool:
        """Whether everything selected is back and the archive verifies (exit 0; else 3)."""
        return self.summary.failed == 0 and not [f for f in self.findings if not f.resolved]


def open_source(source: str, endpoint_url: str | None = None, jobs: int | None = None) -> BackupSource:
    """A backup source from its name: `s3://BUCKET/PREFIX` or a folder."""
    from pacsctl.storage.objects import is_object_url

    if is_object_url(source):
        from pacsctl.integrity.offsite import open_store

        return BucketSource(open_store(source, endpoint_url, jobs))
    if endpoint_url:
        raise UsageError("--endpoint-url goes with an s3:// source")
    root = Path(source).expanduser()
    if not root.is_dir():
        raise UsageError(f"no backup folder {root}", hint="is the backup disk mounted?")
    return FolderSource(root)


def restore_archive(
    source: BackupSource,
    target: Path,
    *,
    jobs: int | None = None,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = lambda files, nbytes: None,
) -> RestoreReport:
    """Rebuild a whole archive in `target` (new, empty, or an interrupted restore) from `source`."""
    started = time.monotonic()
    target = Path(target).expanduser().absolute()
    manifest = _manifest_of(source)
    _prepare_target(target)
    # One restore per folder: the marker is its lock (LockBusy, exit 1, names the other run).
    with locks.exclusive(target / MARKER, "restore", resource=str(target), hint="wait for it to finish"):
        if not (target / MARKER).exists():  # the other run finished and removed it meanwhile
            raise UsageError(f"{target} was just restored by another run", hint="check it: `pacsctl verify`")
        files.fsync_dir(target)  # the marker is there for good: a re-run after a crash is allowed in
        for sub in (OBJECTS, TMP, INDEX, QUARANTINE):
            files.ensure_dir(target / sub)
        return _restore_archive(source, target, manifest, jobs, on_total, progress, started)


def _restore_archive(
    source: BackupSource,
    target: Path,
    manifest: Manifest,
    jobs: int | None,
    on_total: Callable[[int], None],
    progress: Progress,
    started: float,
) -> RestoreReport:
    report = RestoreReport(summary=RestoreSummary(source=source.name))
    report.findings += [
        Finding(MANIFEST_NAME, F.MANIFEST_DAMAGED, text, where=F.BACKUP) for text in manifest.damage
    ]
    others = source.others()
    if CONFIG_NAME in others:  # first: the archive opens with its own settings
        report.summary.other_files += _copy_other(source, target, CONFIG_NAME)
    entries = sorted(manifest.entries.values(), key=lambda e: e.path)
    report.summary.selected = len(entries)
    on_total(len(entries))
    _Copier(source, target, report, progress).copy_all(entries, jobs or DEFAULT_THREADS)
    for relpath in others:
        if relpath != CONFIG_NAME:
            report.summary.other_files += _copy_other(source, target, relpath)
    with Archive.open(target, create=True) as archive:
        rebuilt = reindex(archive, jobs=jobs)
        report.findings += rebuilt.findings
        report.summary.indexed = rebuilt.summary.indexed
        report.verify = verify_archive(archive, jobs=jobs)
        report.summary.verified = report.verify.summary.ok
    if report.summary.failed == 0:
        (target / MARKER).unlink(missing_ok=True)
        files.fsync_dir(target)
    report.summary.elapsed = time.monotonic() - started
    return report


def restore_part(
    source: BackupSource,
    archive: Archive,
    *,
    study_uids: Iterable[str] = (),
    filters: Mapping[str, str] | None = None,
    jobs: int | None = None,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = lambda files, nbytes: None,
) -> RestoreReport:
    """Bring the selected instances back into an existing archive through its ingest."""
    from pacsctl.dicom.matching import compile_filters

    started = time.monotonic()
    criteria = dict(filters or {})
    studies = list(study_uids)
    if studies:
        criteria["StudyInstanceUID"] = "\\".join(studies)
    if not criteria:
        raise UsageError(
            "nothing selected", hint="--study UID or -k KEY=VALUE (or no selection: a whole archive)"
        )
    flt = compile_filters(criteria)
    manifest = _manifest_of(source)
    report = RestoreReport(summary=RestoreSummary(source=source.name))
    candidates = _by_uids(manifest.entries.values(), flt, report)
    header_keys = [k for k in flt.keys if k not in UID_KEYS]
    report.summary.selected = len(candidates)
    on_total(len(candidates))

    def fetch(entry: Expected) -> tuple[Expected, bytes | str]:
        try:
            data = b"".join(source.chunks(entry.path))
        except FileNotFoundError:
            return entry, "not in the backup"
        except OSError as exc:
            return entry, f"cannot read the backup's copy ({exc.strerror or exc})"
        import hashlib

        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            return entry, "the backup's copy does not match the manifest's SHA-256"
        return entry, data

    with ThreadPoolExecutor(max_workers=jobs or DEFAULT_THREADS) as pool:
        batch: list[tuple[Expected, bytes]] = []
        for entry, got in pool.map(fetch, candidates):
            if isinstance(got, str):
                _fail(report, entry, got)
                progress(1, 0)
                continue
            if header_keys and not _header_matches(got, flt):
                report.summary.not_matching += 1
                progress(1, 0)
                continue
            batch.append((entry, got))
            if len(batch) >= 64:
                _ingest(archive, source, batch, report, progress)
                batch = []
        if batch:
            _ingest(archive, source, batch, report, progress)
    report.summary.selected -= report.summary.not_matching
    report.summary.elapsed = time.monotonic() - started
    return report


def _by_uids(entries: Iterable[Expected], flt, report: RestoreReport) -> list[Expected]:
    """Manifest entries the filter's UID criteria admit (all of them when it has none)."""
    uid_criteria = {k: c for k, c in flt.criteria.items() if k in UID_KEYS and c.kind != "universal"}
    out = []
    lacking = 0
    for entry in sorted(entries, key=lambda e: e.path):
        values = {k: getattr(entry, attr) for k, attr in UID_KEYS.items()}
        if any(not values[k] for k in uid_criteria):
            lacking += 1
            continue
        if all(c.matches_value(values[k]) for k, c in uid_criteria.items()):
            out.append(entry)
    if lacking:
        raise UsageError(
            f"the manifest lacks study/series UIDs for {lacking} instances (an older pacsctl made it)",
            hint="run `pacsctl backup` to the same place once more, then restore",
        )
    return out


def _header_matches(data: bytes, flt) -> bool:
    from pacsctl.dicom.instance import read_instance

    try:
        return bool(flt.matches(read_instance(data).fields()))
    except Exception:  # noqa: BLE001 - an unreadable instance matches no attribute
        return False


def _ingest(
    archive: Archive,
    source: BackupSource,
    batch: list[tuple[Expected, bytes]],
    report: RestoreReport,
    progress: Progress,
) -> None:
    results = archive.ingest([(data, f"{source.name}/{entry.path}") for entry, data in batch])
    for (entry, data), result in zip(batch, results, strict=True):
        if result.status == "stored":
            report.summary.restored += 1
            report.summary.bytes += len(data)
        elif result.status == "duplicate" and not result.conflict:
            report.summary.present += 1
        else:
            _fail(report, entry, f"the archive did not take it: {result.status} ({result.reason})")
        progress(1, len(data))


def _manifest_of(source: BackupSource) -> Manifest:
    manifest = source.manifest()
    if manifest is None:
        raise UsageError(
            f"{source.name} has no {MANIFEST_NAME}: not a pacsctl backup",
            hint="restore from what `pacsctl backup` wrote (a folder or s3://BUCKET/PREFIX)",
        )
    return manifest


def _prepare_target(target: Path) -> None:
    """Check the target is a new or empty folder (or one an interrupted restore left); create it."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).exists():
        raise UsageError(
            f"{target} is not empty: a whole restore goes into a new or empty folder",
            hint="to bring back part of a backup into this archive: --study UID or -k KEY=VALUE",
        )
    if not target.parent.is_dir():
        raise UsageError(
            f"no folder {target.parent}", hint="the archive folder is created, its parent must exist"
        )
    files.ensure_dir(target)  # the marker is created by the lock taken on it (never renamed over)


def _copy_other(source: BackupSource, target: Path, relpath: str) -> int:
    if relpath in (MANIFEST_NAME, LOCK_NAME):
        return 0
    try:
        data = b"".join(source.chunks(relpath))
    except FileNotFoundError:
        return 0
    dest = target / relpath
    files.ensure_dir(dest.parent)
    files.write_atomic(target / TMP, dest, data)
    return 1


def _fail(report: RestoreReport, entry: Expected, reason: str) -> None:
    problem = F.MISSING if reason == "not in the backup" else F.COPY_FAILED
    if "SHA-256" in reason:
        problem = F.HASH_MISMATCH
    report.summary.failed += 1
    report.findings.append(Finding(entry.path, problem, reason, entry.sop_instance_uid, F.BACKUP))


class _Copier:
    """The copies of a whole restore, staged in tmp/ by threads and named in durable batches."""

    def __init__(self, source: BackupSource, target: Path, report: RestoreReport, progress: Progress) -> None:
        self.source, self.target, self.report, self.progress = source, target, report, progress

    def copy_all(self, entries: list[Expected], threads: int) -> None:
        todo = []
        for entry in entries:
            if _size(self.target / entry.path) == entry.size:  # named only after its hash matched
                self.report.summary.present += 1
            else:
                todo.append(entry)
        self.progress(self.report.summary.present, 0)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for start in range(0, len(todo), BATCH_FILES):
                staged = []
                for entry, result in pool.map(self._stage, todo[start : start + BATCH_FILES]):
                    if isinstance(result, str):
                        _fail(self.report, entry, result)
                        self.progress(1, 0)
                    else:
                        staged.append((entry, result))
                make_durable(self.target, [s.temp_path for _, s in staged])
                dirs = set()
                for entry, stage in staged:
                    dest = self.target / entry.path
                    files.ensure_dir(dest.parent, durable=False)
                    files.publish(stage, dest, replace=True)
                    dirs.add(dest.parent)
                    self.report.summary.restored += 1
                    self.report.summary.bytes += entry.size
                    self.progress(1, entry.size)
                if not files.syncfs(self.target):
                    for folder in sorted(dirs):
                        files.fsync_dir(folder)

    def _stage(self, entry: Expected) -> tuple[Expected, files.StagedFile | str]:
        try:
            staged = files.stage(self.target / TMP, self.source.chunks(entry.path), fsync=False)
        except FileNotFoundError:
            return entry, "not in the backup"
        except OSError as exc:
            return entry, f"cannot copy ({exc.strerror or exc})"
        except PacsctlError:
            raise
        if (staged.size, staged.sha256) != (entry.size, entry.sha256):
            staged.temp_path.unlink(missing_ok=True)
            return entry, "the backup's copy does not match the manifest's SHA-256"
        return entry, staged


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1
