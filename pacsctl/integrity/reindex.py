"""`reindex`: rebuild the index from the files in objects/ alone.

Files are the source of truth; the index is derived. Every file is read once (hashed and
parsed from the same bytes) in worker processes, then the old index is dropped and the new
records folded in. This is also the restore path: a backup folder is laid out like an archive,
so `pacsctl --archive DEST reindex` makes it one. When the folder holds a backup manifest, each
file is checked against it too, and a file whose bytes differ from the manifest is reported
and left out of the index (it would otherwise be recorded as good).

Safe while another process writes: files stored after the walk are either in a live writer's
journal (kept by `Index.clear`) or found by a second walk after the old index was dropped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pacsctl.archive.archive import OBJECTS, Archive
from pacsctl.dicom.attributes import dataset_fields, index_record
from pacsctl.integrity import findings as F
from pacsctl.integrity.filecheck import Content, Expected, read_content, read_header, walk_objects
from pacsctl.integrity.findings import Finding
from pacsctl.integrity.manifest import MANIFEST_NAME, read_manifest
from pacsctl.parallel import chunk_size, chunked, default_jobs, map_unordered
from pacsctl.storage import files
from pacsctl.storage.index import Index
from pacsctl.summary import SummaryRecord

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

ADD_BATCH = 20_000  # records folded into the index at a time (bounded memory at millions)

Progress = Callable[[int, int], None]  # (files done, bytes read) since the last call


@dataclass
class ReindexSummary(SummaryRecord):
    """The closing record of a reindex."""

    files: int = 0
    indexed: int = 0
    problems: int = 0
    adopted: int = 0  # misplaced instances moved to where they belong, then indexed
    quarantined: int = 0  # junk and stray copies moved out of objects/ to the quarantine
    bytes: int = 0
    checked_against_manifest: int = 0
    elapsed: float = 0.0


@dataclass
class ReindexReport:
    """Files that could not be indexed, and the summary."""

    findings: list[Finding] = field(default_factory=list)
    summary: ReindexSummary = field(default_factory=ReindexSummary)

    @property
    def ok(self) -> bool:
        """Whether every file was indexed, if need be after moving it to its place (exit 0; else 3)."""
        return all(f.resolved for f in self.findings)


def reindex(
    archive: Archive,
    *,
    jobs: int | None = None,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = lambda files, nbytes: None,
) -> ReindexReport:
    """Drop the archive's index and rebuild it from objects/."""
    started = time.monotonic()
    files.require_writable(
        archive.root, (archive.tmp_dir, archive.index.root), "reindex rebuilds the index inside it"
    )
    jobs = jobs or default_jobs()
    report = ReindexReport()
    manifest = read_manifest(archive.root)
    entries = manifest.entries if manifest is not None else None
    if manifest is not None:
        report.findings += [Finding(MANIFEST_NAME, F.MANIFEST_DAMAGED, text) for text in manifest.damage]
    paths = sorted(walk_objects(archive.root, OBJECTS))
    on_total(len(paths))
    # Records wait in a spool file, not in memory (a million records are gigabytes of dicts),
    # and the old index is dropped only once every file has been read.
    with _Spool(archive.tmp_dir) as spool:
        placed: set[str] = set()  # misplaced files moved to their paths (read already)
        _read_all(archive, paths, jobs, entries, report, progress, spool, placed)
        if entries is not None:
            walked = set(paths)
            report.findings += [
                Finding(
                    path, F.MISSING, "listed in the backup manifest, no such file", entry.sop_instance_uid
                )
                for path, entry in entries.items()
                if path not in walked
            ]
        archive.index.clear()
        spool.add_to(archive.index)
        # Stored while we read (their journals may have been folded and dropped by `clear`)?
        late = sorted(set(walk_objects(archive.root, OBJECTS)) - set(paths) - placed)
        _read_all(archive, late, 1, entries, report, progress, spool, placed)
        spool.add_to(archive.index)
    report.summary.files = len(paths) + len(late)
    report.summary.indexed = spool.added
    report.findings.sort(key=lambda f: f.path)
    report.summary.problems = sum(not f.resolved for f in report.findings)
    report.summary.elapsed = time.monotonic() - started
    return report


class _Spool:
    """Index records written to a temp file in the archive's tmp/, then added in batches."""

    def __init__(self, tmp_dir: Path) -> None:
        self.path = files.temp_name(tmp_dir)
        self.file = open(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, files.FILE_MODE), "w+b")
        self.added = 0

    def write(self, records: Iterable[dict]) -> None:
        self.file.writelines(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)

    def add_to(self, index: Index) -> None:
        """Add the spooled records to the index (folded and durable when this returns); empty the spool."""
        self.file.seek(0)
        batch: list[dict] = []
        for line in self.file:
            batch.append(json.loads(line))
            if len(batch) >= ADD_BATCH:
                self._add(index, batch)
                batch = []
        self._add(index, batch)
        index.flush()
        self.file.seek(0)
        self.file.truncate()

    def _add(self, index: Index, batch: list[dict]) -> None:
        if batch:
            index.add(batch, durable=False)
            index.flush()  # folds into the shards, written atomically and durably
            self.added += len(batch)

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _read_all(
    archive: Archive,
    paths: Sequence[str],
    jobs: int,
    entries: dict[str, Expected] | None,
    report: ReindexReport,
    progress: Progress,
    spool: _Spool,
    placed: set[str],
) -> None:
    """Read, hash and parse `paths` in worker processes; spool the records that may be indexed.
    Misplaced files moved to their paths are added to `placed`."""
    size = chunk_size(len(paths), jobs)
    for records, found, nbytes, strays in map_unordered(
        _index_chunk,
        ((str(archive.root), chunk) for chunk in chunked(paths, size)),
        jobs if len(paths) > size else 1,
    ):
        progress(len(records) + len(found) + len(strays), nbytes)
        report.summary.bytes += nbytes
        report.findings += found
        adopted = [rec for stray in strays if (rec := _resolve_stray(archive, stray, report)) is not None]
        placed.update(rec["path"] for rec in adopted)
        records += adopted
        if entries is not None:
            records = _check_manifest(records, entries, report)
        spool.write(records)


def _resolve_stray(archive: Archive, stray: _Stray, report: ReindexReport) -> dict | None:
    """Give a file that cannot be indexed where it lies a place (so `verify` stops reporting it):
    a misplaced instance moves to its path (its record is returned); junk, and a copy whose
    place is taken, go to the quarantine with the reason."""
    source = archive.path_of(stray.path)
    uid = stray.record["SOPInstanceUID"] if stray.record else ""
    if stray.record is not None:
        target = archive.path_of(stray.record["path"])
        try:
            moved = files.publish(
                files.StagedFile(source, stray.record["size"], stray.record["sha256"]), target, replace=False
            )
            if moved:
                files.fsync_dir(target.parent)
                files.fsync_dir(source.parent)
        except OSError as exc:
            report.findings.append(
                Finding(
                    stray.path, F.UNKNOWN_FILE, f"{stray.reason}; cannot move it: {exc.strerror or exc}", uid
                )
            )
            return None
        if moved:
            report.summary.adopted += 1
            report.findings.append(
                Finding(
                    stray.path,
                    F.UNKNOWN_FILE,
                    f"{stray.reason}; now at {stray.record['path']}",
                    uid,
                    action=F.ADOPTED,
                )
            )
            return stray.record
        same = files.sha256_file(target)[1] == stray.record["sha256"]
        reason = f"{stray.reason}; " + (
            "a copy of the archived instance" if same else "the archived instance has other bytes"
        )
        problem = F.UNKNOWN_FILE
    else:
        reason, problem = stray.reason, F.UNREADABLE
    try:
        kept = archive.quarantine(
            source.read_bytes(), f"found in objects/ by reindex: {reason}", stray.path, uid
        )
        source.unlink()
        files.fsync_dir(source.parent)
    except OSError as exc:
        report.findings.append(
            Finding(
                stray.path, problem, f"{reason}; cannot move it to quarantine: {exc.strerror or exc}", uid
            )
        )
        return None
    report.summary.quarantined += 1
    report.findings.append(
        Finding(stray.path, problem, f"{reason}; kept as {kept.path}", uid, action=F.QUARANTINED)
    )
    return None


def _check_manifest(records: list[dict], entries: dict[str, Expected], report: ReindexReport) -> list[dict]:
    """The records whose bytes are the ones the backup manifest lists; the others are reported."""
    kept = []
    for rec in records:
        entry = entries.get(rec["path"])
        if entry is not None:
            report.summary.checked_against_manifest += 1
            if (entry.size, entry.sha256) != (rec["size"], rec["sha256"]):
                problem = F.WRONG_SIZE if entry.size != rec["size"] else F.HASH_MISMATCH
                report.findings.append(
                    Finding(
                        rec["path"],
                        problem,
                        "differs from the backup manifest; not indexed",
                        rec["SOPInstanceUID"],
                    )
                )
                continue
        kept.append(rec)
    return kept


@dataclass
class _Stray:
    """A file in objects/ that cannot be indexed where it lies: misplaced (with the record it has
    at its right path) or not an instance at all (`record` None)."""

    path: str
    reason: str
    record: dict | None = None


class _Misplaced(ValueError):
    """A readable instance stored under another instance's path."""

    def __init__(self, message: str, record: dict) -> None:
        super().__init__(message)
        self.record = record


def _index_chunk(task: tuple[str, Sequence[str]]) -> tuple[list[dict], list[Finding], int, list[_Stray]]:
    """Worker: read, hash and parse files; return their index records, what could not be read,
    the bytes read, and the files that cannot be indexed where they lie."""
    root, paths = Path(task[0]), task[1]
    records: list[dict] = []
    found: list[Finding] = []
    strays: list[_Stray] = []
    nbytes = 0
    for path in paths:
        try:
            content = read_content(root / path)
        except FileNotFoundError:
            continue  # gone since the walk: nothing to index
        except OSError as exc:
            found.append(Finding(path, F.UNREADABLE, f"cannot read: {exc.strerror or exc}"))
            continue
        nbytes += content.size
        try:
            records.append(record_of(path, content, root / path))
        except _Misplaced as exc:
            strays.append(_Stray(path, str(exc), exc.record))
        except ValueError as exc:
            strays.append(_Stray(path, str(exc)))
    return records, found, nbytes, strays


def record_of(path: str, content: Content, file: Path) -> dict:
    """The index record of stored file `file` (archive path `path`), read as `content`.

    Raises ValueError when it cannot be indexed as is.
    """
    from pacsctl.dicom.instance import DicomdirError, NotDicomError, read_instance
    from pacsctl.errors import InvalidDicomError

    if content.size == len(content.head):
        try:
            inst = read_instance(content.head)
        except (NotDicomError, DicomdirError, InvalidDicomError) as exc:
            raise ValueError(f"not a storable DICOM instance: {exc}") from None
        if inst.data is not content.head and inst.data != content.head:
            raise ValueError("not a Part-10 file (no File Meta header)")
        fields, uid, syntax = inst.fields(), inst.sop_instance_uid, inst.transfer_syntax_uid
    else:  # huge: parse the header only, from the head kept in memory or else from the file
        try:
            ds, uid, syntax = _header_dataset(content.head)
        except ValueError:
            ds, uid, syntax = _header_dataset(file)
        fields = dataset_fields(ds)
    right = Archive.object_relpath(uid)
    record = index_record(
        fields, transfer_syntax_uid=syntax, path=right, size=content.size, sha256=content.sha256
    )
    if right != path:
        raise _Misplaced(f"misplaced: holds SOP Instance UID {uid}, which belongs at {right}", record)
    return record


def _header_dataset(source: bytes | Path) -> tuple[Dataset, str, str]:
    """The header of a huge file (up to the pixel data; from a file, big values are deferred)."""
    try:
        ds = read_header(source)
    except ValueError as exc:
        raise ValueError(f"DICOM header unreadable: {exc}") from None
    uid = str(ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID") or "")
    syntax = str(ds.file_meta.get("TransferSyntaxUID") or "")
    if not uid or not syntax:
        raise ValueError("DICOM header lacks SOP Instance UID or Transfer Syntax UID")
    return ds, uid, syntax


def records_of(report: ReindexReport) -> Iterable[dict]:
    """The report as JSON records: one per finding, then the summary."""
    for finding in report.findings:
        yield finding.as_dict()
    yield {"type": "summary", "command": "reindex", **report.summary.as_dict()}
