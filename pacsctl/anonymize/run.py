"""Anonymize many inputs into an output folder: one typed result per input, atomic writes.

Inputs are anything with `origin` and `read()` (the CLI hands in `ingest.sources.Source`s, so
folders, zips and DICOMDIR media are walked the way `import` walks them; `FileInput` is a plain
file), or a problem met while walking (`origin`, `reason`, `unreadable`, `missing`). Outputs go
to OUT/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm, all new UIDs: no original
file name (which may hold a patient's name) reaches the output. Each file is written to a temp
file and renamed into place; one sync at the end makes the run durable. Sources are only read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from pacsctl.anonymize.deidentify import Anonymizer, Outcome, Status
from pacsctl.anonymize.identity import MapEntry
from pacsctl.anonymize.profile import Options, SiteProfile
from pacsctl.archive.archive import Archive
from pacsctl.archive.search import instances_matching
from pacsctl.errors import UsageError
from pacsctl.parallel import chunk_size, chunked, map_unordered
from pacsctl.storage import files
from pacsctl.summary import SummaryRecord

TMP_DIR = ".pacsctl-tmp"  # inside OUT: same file system, so a rename publishes
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


@runtime_checkable
class Input(Protocol):
    """One readable input (`ingest.sources.Source` is one)."""

    @property
    def origin(self) -> str: ...

    def read(self) -> bytes: ...


@dataclass(frozen=True)
class FileInput:
    """A plain file as an input."""

    path: str

    @property
    def origin(self) -> str:
        return self.path

    def read(self) -> bytes:
        with open(self.path, "rb") as fh:
            return fh.read()


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to anonymize (picklable)."""

    key: bytes
    options: Options = field(default_factory=Options)
    profile: SiteProfile = field(default_factory=SiteProfile)
    patient_map: dict[str, str] = field(default_factory=dict)
    record_map: bool = False

    def anonymizer(self) -> Anonymizer:
        return Anonymizer(self.key, self.options, self.profile, self.patient_map, self.record_map)


@dataclass
class FileResult:
    """How one input ended: `output` is the file written (or that a dry run would write)."""

    source: str
    status: Status
    output: str | None = None
    reason: str = ""
    warning: str = ""
    size: int = 0
    mapping: list[MapEntry] = field(default_factory=list)
    data: bytes | None = field(default=None, repr=False)  # only on its way into the archive

    def as_record(self) -> dict[str, object]:
        """The `--json` record (never a patient value: reasons name attributes only)."""
        record: dict[str, object] = {
            "type": "file",
            "source": self.source,
            "output": self.output,
            "status": self.status.value,
            "reason": self.reason or None,
        }
        if self.warning:
            record["warning"] = self.warning
        return record


@dataclass
class RunSummary(SummaryRecord):
    """The closing counts: files = written + refused + leak + failed + skipped."""

    files: int = 0
    written: int = 0
    refused: int = 0
    leak: int = 0
    failed: int = 0
    skipped: int = 0
    warned: int = 0  # written with a burned-in warning (--burned-in warn)
    random_key: bool = False  # no key given: these UIDs cannot be reproduced by a later run
    dry_run: bool = False
    mapped: int = 0  # lines written to --map-out
    elapsed: float = 0.0

    def add(self, result: FileResult) -> None:
        self.files += 1
        name = result.status.value
        setattr(self, name, getattr(self, name) + 1)
        if result.warning:
            self.warned += 1

    @property
    def incomplete(self) -> bool:
        """Exit 3: something was refused, leaked or failed."""
        return bool(self.refused or self.leak or self.failed)


def check_output_folder(out_dir: Path, inputs: Iterable[str]) -> None:
    """Refuse an output folder that is an input or inside one (never in place, and a second run
    must not read the first one's output as input)."""
    out = out_dir.absolute().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out_dir} is not a folder", hint="give a new or existing folder")
    for given in inputs:
        source = Path(given).absolute().resolve()
        if source.is_dir() and (out == source or source in out.parents):
            raise UsageError(
                f"the output folder {out_dir} is inside the input {given}",
                hint="write the anonymized copies somewhere outside the inputs",
            )


def archive_inputs(archive: Archive, filters: dict[str, str]) -> list[FileInput]:
    """The archived files `filters` select (`pacsctl ls` matching: -k KEY=VALUE, --study);
    a usage error naming the keys (never the values, which may be a patient's) when none."""
    records = [r for r in instances_matching(archive.index, filters) if r.get("path")]
    if not records:
        raise UsageError(
            f"no archived instance matches the selection ({', '.join(sorted(filters)) or 'all'})",
            hint="see `pacsctl ls` for what the archive holds; nothing was written",
        )
    records.sort(
        key=lambda r: (
            str(r.get("StudyInstanceUID")),
            str(r.get("SeriesInstanceUID")),
            str(r.get("SOPInstanceUID")),
        )
    )
    return [FileInput(str(archive.path_of(str(r["path"])))) for r in records]


# -- the worker side ------------------------------------------------------------------------

_worker: dict[str, object] = {}


def _init(settings: Settings, out_dir: str | None, dry_run: bool, archive_root: str | None = None) -> None:
    archive = None
    if archive_root is not None:  # a worker's own handle (its own journal), as import's workers
        from pacsctl.archive.archive import Archive

        archive = Archive.open(archive_root)
    _worker.update(anonymizer=settings.anonymizer(), out=out_dir, dry_run=dry_run, archive=archive)


def _run_chunk(chunk: Sequence[object]) -> list[FileResult]:
    anonymizer = _worker["anonymizer"]
    assert isinstance(anonymizer, Anonymizer)
    out = _worker["out"]
    archive = _worker.get("archive")
    dry_run = bool(_worker["dry_run"])
    if archive is None:
        return [
            anonymize_one(item, anonymizer, Path(out) if isinstance(out, str) else None, dry_run)
            for item in chunk
        ]
    # Into the archive: the chunk's outputs go through the archive's ingest in one group commit.
    results = [anonymize_one(item, anonymizer, None, dry_run, keep_data=True) for item in chunk]
    pending = [r for r in results if r.status is Status.WRITTEN and r.data is not None]
    if pending and not dry_run:
        assert isinstance(archive, Archive)
        stored = archive.ingest([(r.data, r.source) for r in pending if r.data is not None])
        for result, ingested in zip(pending, stored, strict=True):
            _settle(result, ingested)
    for result in results:
        result.data = None
    return results


def _settle(result: FileResult, ingested: object) -> None:
    """A FileResult from what the archive's ingest did with the anonymized copy."""
    status = str(getattr(ingested, "status", ""))
    if status in ("stored", "duplicate"):  # a duplicate: the same anonymized copy, stored before
        result.output = str(getattr(ingested, "path", "")) or None
    else:
        result.status = Status.FAILED
        result.output = None
        result.reason = (
            f"the archive did not store the anonymized copy: {getattr(ingested, 'reason', status)}"
        )


def anonymize_one(
    item: object, anonymizer: Anonymizer, out_dir: Path | None, dry_run: bool, keep_data: bool = False
) -> FileResult:
    """Anonymize one input into `out_dir` (None: nothing written, as a dry run); with
    `keep_data` the result carries the new file's bytes (for the archive's ingest)."""
    origin = str(getattr(item, "origin", item))
    if not isinstance(item, Input):  # a problem met while walking the inputs
        unreadable = bool(getattr(item, "unreadable", False) or getattr(item, "missing", False))
        return FileResult(origin, Status.FAILED if unreadable else Status.SKIPPED, reason=str(item.reason))  # type: ignore[attr-defined]
    try:
        data = item.read()
    except Exception as exc:  # OSError, or a damaged zip member (see ingest.sources.ZIP_ERRORS)
        return FileResult(
            origin,
            Status.FAILED,
            reason=f"unreadable: {getattr(exc, 'strerror', None) or type(exc).__name__}",
        )
    if not _looks_like_dicom(data):
        return FileResult(
            origin, Status.SKIPPED, reason="not a DICOM file" if data else "empty file", size=len(data)
        )
    if data[128:132] == b"DICM" and DICOMDIR_CLASS.encode() in data[132:400]:
        return FileResult(
            origin,
            Status.SKIPPED,
            reason="a DICOMDIR (give it as a path: the files it lists are read)",
            size=len(data),
        )
    try:
        outcome = anonymizer.file_bytes(data)
    except Exception as exc:  # pydicom's reading and writing errors; the message may quote values
        return FileResult(
            origin,
            Status.FAILED,
            reason=f"cannot be read or rewritten as DICOM ({type(exc).__name__})",
            size=len(data),
        )
    result = FileResult(
        origin,
        outcome.status,
        reason=outcome.reason,
        warning=outcome.warning,
        size=len(data),
        mapping=outcome.mapping,
    )
    if keep_data:
        result.data = outcome.data
        return result
    if outcome.status is Status.WRITTEN and outcome.data is not None and out_dir is not None:
        target = output_path(out_dir, outcome)
        result.output = str(target)
        if not dry_run:
            _write(out_dir, target, outcome.data, result)
    return result


def output_path(out_dir: Path, outcome: Outcome) -> Path:
    """OUT/<study>/<series>/<instance>.dcm, named by the new UIDs."""
    return (
        out_dir
        / files.safe_file_name(outcome.study_instance_uid or "no-study")
        / files.safe_file_name(outcome.series_instance_uid or "no-series")
        / f"{files.safe_file_name(outcome.sop_instance_uid)}.dcm"
    )


def _write(out_dir: Path, target: Path, data: bytes, result: FileResult) -> None:
    """Temp file, then a hard link into place (never over another file)."""
    tmp = out_dir / TMP_DIR
    staged = files.stage(tmp, [data], fsync=False, digest=False)  # one sync at the end of the run
    try:
        if files.publish(staged, target, replace=False):
            return
    finally:
        staged.temp_path.unlink(missing_ok=True)
    try:
        same = target.read_bytes() == data
    except OSError:
        same = False
    if not same:  # the same instance from another input (e.g. another transfer syntax)
        result.status = Status.SKIPPED
        result.reason = "another file for the same SOP Instance UID is already in the output folder"


def _looks_like_dicom(data: bytes) -> bool:
    from pacsctl.dicom.instance import looks_like_dicom

    return looks_like_dicom(data[:132])


# -- the run --------------------------------------------------------------------------------


def anonymize_inputs(
    items: Sequence[object],
    out_dir: Path | None,
    settings: Settings,
    *,
    jobs: int = 1,
    dry_run: bool = False,
    random_key: bool = False,
    into: Archive | None = None,
    on_result: Callable[[FileResult], None] = lambda r: None,
    on_start: Callable[[int], None] = lambda total: None,
) -> tuple[RunSummary, list[MapEntry]]:
    """Anonymize every input into `out_dir`, or with `into` through that archive's ingest (as
    new studies), calling `on_result` per input as it ends; return the summary and the mapping
    entries (empty unless `settings.record_map`)."""
    started = time.monotonic()
    summary = RunSummary(random_key=random_key, dry_run=dry_run)
    mapping: list[MapEntry] = []
    written: list[str] = []
    writing = out_dir is not None and not dry_run
    if writing:
        assert out_dir is not None
        files.ensure_dir(out_dir)
        files.ensure_dir(out_dir / TMP_DIR)
        files.remove_dead_writers_temps(out_dir / TMP_DIR)
    on_start(len(items))
    _init(settings, str(out_dir) if out_dir is not None else None, dry_run)
    _worker["archive"] = into  # in this process (jobs 1): the caller's handle
    root = str(into.root) if into is not None and not dry_run else None  # a dry run opens nothing
    size = chunk_size(len(items), jobs, largest=16)
    try:
        for results in map_unordered(
            _run_chunk,
            chunked(list(items), size),
            jobs,
            initializer=_init,
            initargs=(settings, str(out_dir) if out_dir is not None else None, dry_run, root),
            died_hint="run the same command again: what was written is complete",
        ):
            for result in results:
                summary.add(result)
                mapping.extend(result.mapping)
                if result.output and result.status is Status.WRITTEN:
                    written.append(result.output)
                on_result(result)
    finally:
        _worker.clear()
        if into is not None and not dry_run:
            into.index.flush()  # fold the workers' journals
        if writing:
            assert out_dir is not None
            files.barrier(out_dir, written, {os.path.dirname(p) for p in written})
            # Again at the end: a killed run's workers may still have been dying at the start.
            files.remove_dead_writers_temps(out_dir / TMP_DIR)
            try:
                (out_dir / TMP_DIR).rmdir()
            except OSError:
                pass
    summary.elapsed = time.monotonic() - started
    return summary, mapping
