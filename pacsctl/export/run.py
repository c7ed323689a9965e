"""One export: select instances, write them in the chosen format beside DEST, read everything
back, write the manifest, move the result into place (`target`, `zipout`).

    report = export(archive, Path("/media/usb/study"), {"StudyInstanceUID": uid},
                    ExportOptions(format=ExportFormat.DICOMDIR))

Every selected instance ends as exactly one of exported, skipped (nothing to write in this
format: a render of a report without pixel data) or an error (its archived file no longer
matches the hash recorded at ingest, it does not render, ...); errors are reported by UID, never
by a path that may hold a patient ID.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pacsctl.archive.archive import Archive
from pacsctl.archive.search import instances_matching
from pacsctl.dicom.attributes import STUDY_FIELDS
from pacsctl.errors import OperationInterrupted, PacsctlError, UsageError
from pacsctl.export import dicomdir
from pacsctl.export.layout import DEFAULT_LAYOUT, Layout
from pacsctl.export.target import FolderTarget, Target, Written
from pacsctl.export.zipout import ZipTarget
from pacsctl.summary import SummaryRecord

Progress = Callable[[int, int], None]  # (instances done, bytes written)


class ExportFormat(StrEnum):
    """What an export writes."""

    FOLDER = "folder"  # the archived files under the layout's names
    ZIP = "zip"  # the same tree in one zip file
    DICOMDIR = "dicomdir"  # DICOM media: 8-character file IDs and a DICOMDIR


@dataclass
class ExportOptions:
    """How to export (the CLI's options, as a library caller gives them)."""

    format: ExportFormat = ExportFormat.FOLDER
    layout: str = DEFAULT_LAYOUT


@dataclass
class ExportProblem:
    """An instance that is not in the export, and why (no path: it may name the patient)."""

    sop_instance_uid: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"type": "error", "SOPInstanceUID": self.sop_instance_uid, "reason": self.reason}


@dataclass
class ExportSummary(SummaryRecord):
    """The closing record: `exported` instances, `files` and `bytes` written (manifest and
    DICOMDIR included), `skipped` and `errors` instances."""

    dest: str = ""
    format: str = ""
    exported: int = 0
    skipped: int = 0
    errors: int = 0
    files: int = 0
    bytes: int = 0
    elapsed: float = 0.0


@dataclass
class ExportReport:
    """What an export did."""

    summary: ExportSummary
    problems: list[ExportProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every selected instance is in the export (exit 0; else 3)."""
        return not self.problems


class _ArchiveDamaged(Exception):
    """The archived file does not hash to what was recorded at ingest."""


DAMAGED = "the archived file does not match the hash recorded at ingest (run `pacsctl verify`)"


def select(archive: Archive, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    """The instance records `filters` select (all with an empty mapping), study fields merged in
    (the layout may name AccessionNumber, StudyID...), in a stable order: patient, study,
    series, instance number, SOP Instance UID, so names and collisions come out the same on
    every run."""
    index = archive.index
    records = [r for r in instances_matching(index, filters) if r.get("path")]
    uids = sorted({str(r["StudyInstanceUID"]) for r in records})
    studies = {s["StudyInstanceUID"]: s for s in index.studies(study_uids=uids)} if uids else {}
    merged = []
    for record in records:
        study = studies.get(record["StudyInstanceUID"], {})
        merged.append({**{k: study.get(k, "") for k in STUDY_FIELDS}, **record})
    merged.sort(key=_order)
    return merged


def _order(record: Mapping[str, Any]) -> tuple[Any, ...]:
    number = record.get("InstanceNumber")
    return (
        str(record.get("PatientID", "")),
        str(record.get("StudyDate", "")),
        str(record.get("StudyInstanceUID", "")),
        str(record.get("SeriesNumber", "")).zfill(12),
        str(record.get("SeriesInstanceUID", "")),
        number if isinstance(number, int) else 1 << 62,
        str(record.get("SOPInstanceUID", "")),
    )


def export(
    archive: Archive,
    dest: Path,
    filters: Mapping[str, str],
    options: ExportOptions | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> ExportReport:
    """Export the instances `filters` select into `dest` (see the module docstring). Raises
    UsageError when nothing matches or DEST exists, OperationInterrupted when `should_stop`
    says so (nothing is left at DEST then)."""
    options = options or ExportOptions()
    started = time.monotonic()
    layout = Layout(options.layout)  # a bad template fails before anything is written
    records = select(archive, filters)
    if not records:  # the values are not quoted: a filter may hold a patient's name
        raise UsageError(
            f"no archived instance matches the selection ({', '.join(sorted(filters)) or 'all'})",
            hint="see `pacsctl ls` for what the archive holds; nothing was written",
        )
    dest = Path(os.path.abspath(dest))
    if on_total is not None:
        on_total(len(records))
    target: Target = ZipTarget(dest) if options.format is ExportFormat.ZIP else FolderTarget(dest)
    report = ExportReport(ExportSummary(dest=str(dest), format=options.format.value))
    try:
        written = _write_all(archive, target, records, layout, options, report, progress, should_stop)
        owners = {w.relpath: uid for w, uid in written}
        finished = target.finish([w for w, _ in written])
        for bad, reason in finished.bad:
            report.problems.append(ExportProblem(owners.get(bad.relpath, ""), reason))
            report.summary.files -= 1
            report.summary.bytes -= bad.size
        report.summary.files += 1
        report.summary.bytes += finished.manifest.size
    except BaseException:
        target.abort()
        raise
    summary = report.summary
    summary.errors = len(report.problems)
    summary.exported = len(records) - summary.skipped - summary.errors
    summary.elapsed = time.monotonic() - started
    return report


def _write_all(
    archive: Archive,
    target: Target,
    records: list[dict[str, Any]],
    layout: Layout,
    options: ExportOptions,
    report: ExportReport,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
) -> list[tuple[Written, str]]:
    """Every instance's files, each with the SOP Instance UID it came from ("" for DICOMDIR)."""
    written: list[tuple[Written, str]] = []
    media: list[tuple[Written, dicomdir.MediaHeader, str]] = []
    summary = report.summary
    for n, record in enumerate(records):
        if should_stop is not None and should_stop():
            raise OperationInterrupted("export stopped: nothing was left at the destination")
        uid = str(record["SOPInstanceUID"])
        source = archive.path_of(record["path"])
        relpath = f"TMP/{n:08d}" if options.format is ExportFormat.DICOMDIR else layout.path_of(record)
        try:
            out = target.copy_file(relpath, source)
            if (out.size, out.sha256) != (int(record.get("size") or -1), str(record.get("sha256", ""))):
                target.remove(out)
                raise _ArchiveDamaged()
        except _ArchiveDamaged:
            report.problems.append(ExportProblem(uid, DAMAGED))
            _tick(progress, 0)
            continue
        except FileNotFoundError:
            report.problems.append(ExportProblem(uid, "the archived file is missing (run `pacsctl verify`)"))
            _tick(progress, 0)
            continue
        except OSError as exc:
            raise PacsctlError(f"cannot write the export: {os.strerror(exc.errno or 0)}") from exc
        if options.format is ExportFormat.DICOMDIR:
            header = dicomdir.MediaHeader(dicomdir.read_header(source), str(record["TransferSyntaxUID"]))
            media.append((out, header, uid))
        written.append((out, uid))
        summary.files += 1
        summary.bytes += out.size
        _tick(progress, out.size)
    if options.format is ExportFormat.DICOMDIR and media:
        assert isinstance(target, FolderTarget)
        written = _place_on_media(target, media, report)
    return written


def _place_on_media(
    target: FolderTarget, media: list[tuple[Written, dicomdir.MediaHeader, str]], report: ExportReport
) -> list[tuple[Written, str]]:
    """Give the staged files the File-set's IDs and add the DICOMDIR."""
    try:
        data, ids = dicomdir.build(header for _, header, _ in media)
    except ValueError as exc:
        raise PacsctlError(f"cannot write the DICOMDIR: {exc}") from None
    placed = []
    for out, _, uid in media:
        file_id = ids[uid]
        target.rename(out.relpath, file_id)
        placed.append((Written(file_id, out.size, out.sha256), uid))
    target.remove_dir("TMP")
    dicomdir_file = target.write_bytes("DICOMDIR", data)
    report.summary.files += 1
    report.summary.bytes += dicomdir_file.size
    return [*placed, (dicomdir_file, "")]


def _tick(progress: Progress | None, nbytes: int) -> None:
    if progress is not None:
        progress(1, nbytes)
