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

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pacsctl.archive.archive import Archive
from pacsctl.archive.search import instances_matching
from pacsctl.dicom.attributes import STUDY_FIELDS
from pacsctl.errors import OperationInterrupted, PacsctlError, UsageError
from pacsctl.export import media as media_module
from pacsctl.export.formats import DEFAULT_LAYOUT, ExportFormat
from pacsctl.export.layout import Layout
from pacsctl.export.target import MANIFEST_NAME, FolderTarget, SizeMismatch, Target, Written, manifest_text
from pacsctl.export.zipout import ZipTarget
from pacsctl.storage.files import sha256_file
from pacsctl.summary import SummaryRecord

if TYPE_CHECKING:  # dicomdir pulls in pydicom (~0.6 s of start-up): only the dicomdir format needs it
    from pacsctl.export import dicomdir

__all__ = ["ExportFormat", "ExportOptions", "ExportReport", "export", "select"]

Progress = Callable[[int, int], None]  # (instances done, bytes written)
COPY_THREADS = 4


@dataclass
class ExportOptions:
    """How to export (the CLI's options, as a library caller gives them)."""

    format: ExportFormat = ExportFormat.FOLDER
    layout: str = DEFAULT_LAYOUT
    converter: Converter | None = None  # given by a library caller, else built from the options
    transcode: str | None = None  # a transcode.Syntax value
    window: Any = None  # render.Window for png/jpeg
    size: int | None = None
    all_frames: bool = False
    sheet: bool = False
    anonymizer: Any = None  # an anonymize.deidentify.Anonymizer
    media_size: int | None = None  # dicomdir: split over volumes of at most this many bytes
    iso: Path | None = None  # dicomdir: also an ISO 9660 image (one per volume)


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
    volumes: int = 0
    iso: list[str] = field(default_factory=list)
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
    if options.converter is None:
        options = dataclasses.replace(options, converter=_converter(options))
    started = time.monotonic()
    layout = Layout(options.layout)  # a bad template fails before anything is written
    records = select(archive, filters)
    if not records:  # the values are not quoted: a filter may hold a patient's name
        raise UsageError(
            f"no archived instance matches the selection ({', '.join(sorted(filters)) or 'all'})",
            hint="see `pacsctl ls` for what the archive holds; nothing was written",
        )
    dest = Path(os.path.abspath(dest))
    media = options.format is ExportFormat.DICOMDIR
    if (options.media_size or options.iso) and not media:
        raise UsageError("--media-size and --iso apply to --format dicomdir")
    volumes = media_module.split(records, options.media_size) if options.media_size else [records]
    prefixes = (
        [f"{media_module.volume_name(n)}/" for n in range(1, len(volumes) + 1)]
        if options.media_size
        else [""]
    )
    isos = media_module.iso_names(Path(os.path.abspath(options.iso)), len(volumes)) if options.iso else []
    if isos:
        media_module.check_iso_targets(isos)
    if on_total is not None:
        on_total(len(records))
    target: Target = ZipTarget(dest) if options.format is ExportFormat.ZIP else FolderTarget(dest)
    report = ExportReport(ExportSummary(dest=str(dest), format=options.format.value, volumes=len(volumes)))
    try:
        written: list[tuple[Written, str]] = []
        for prefix, volume in zip(prefixes, volumes, strict=True):
            part = _write_all(archive, target, volume, layout, options, report, progress, should_stop, prefix)
            if prefix:  # each volume a complete media set: its own manifest, relative to it
                listed = [Written(w.relpath[len(prefix) :], w.size, w.sha256) for w, _ in part]
                part.append((target.write_bytes(prefix + MANIFEST_NAME, manifest_text(listed)), ""))
                report.summary.files += 1
                report.summary.bytes += part[-1][0].size
            written += part
        owners = {w.relpath: uid for w, uid in written}
        finished = target.finish([w for w, _ in written])
        for bad, reason in finished.bad:
            uid = owners.get(bad.relpath, "")
            report.problems.append(ExportProblem(uid, _why_not_read_back(archive, records, uid, reason)))
            report.summary.files -= 1
            report.summary.bytes -= bad.size
        report.summary.files += 1
        report.summary.bytes += finished.manifest.size
    except BaseException:
        target.abort()
        raise
    try:
        for prefix, iso in zip(prefixes, isos, strict=False):
            media_module.write_iso(
                dest / prefix if prefix else dest, iso, f"PACSCTL_{prefix.rstrip('/') or 'DISK'}"
            )
            report.summary.iso.append(str(iso))
    except BaseException:
        media_module.remove_isos(isos)  # the folder export stands; the images are all or none
        raise
    summary = report.summary
    summary.errors = len(report.problems)
    summary.exported = len(records) - summary.skipped - summary.errors
    summary.elapsed = time.monotonic() - started
    return report


@dataclass
class _Outcome:
    """What became of one instance: its files, or why it has none."""

    written: list[Written] = field(default_factory=list)
    problem: str = ""
    skipped: bool = False
    header: dicomdir.MediaHeader | None = None


class ConvertError(Exception):
    """An instance a converter cannot write in the export's format (the reason is the message)."""


class Converter(Protocol):
    """A format that writes something else than the archived bytes for some instances.
    `names_files`: the converter names the files itself (from what it wrote: anonymized
    values), so it runs in record order on one thread and is given no layout path."""

    names_files: bool

    def applies(self, record: Mapping[str, Any]) -> bool:
        """Whether this instance is converted (else its archived bytes are copied)."""
        ...

    def convert(self, data: bytes, record: Mapping[str, Any], relpath: str) -> list[tuple[str, bytes]]:
        """From the instance's (checked) bytes, its record and its layout path, the files to
        write; [] when there is nothing to write in this format (skipped). Raises ConvertError."""
        ...


BATCH = 64  # instances planned at once (their paths in order), then copied on the threads


def _write_all(
    archive: Archive,
    target: Target,
    records: list[dict[str, Any]],
    layout: Layout,
    options: ExportOptions,
    report: ExportReport,
    progress: Progress | None,
    should_stop: Callable[[], bool] | None,
    prefix: str = "",
) -> list[tuple[Written, str]]:
    """Every instance's files, each with the SOP Instance UID it came from ("" for DICOMDIR).
    Paths are given in order (deterministic names); the copies run on threads (reads, writes
    and hashing release the GIL), one for a zip (a single stream)."""
    media = options.format is ExportFormat.DICOMDIR
    converter = options.converter
    if media:
        from pacsctl.export import dicomdir

    def one(item: tuple[int, dict[str, Any], str]) -> _Outcome:
        n, record, relpath = item
        if should_stop is not None and should_stop():
            raise OperationInterrupted("export stopped: nothing was left at the destination")
        source = archive.path_of(record["path"])
        try:
            applies = converter is not None and converter.applies(record)
            outcome = _convert(target, source, record, relpath, converter) if applies else None
            if outcome is None:
                outcome = _Outcome(
                    [
                        target.copy_verbatim(
                            relpath, source, int(record.get("size") or -1), str(record.get("sha256", ""))
                        )
                    ]
                )
            if media and outcome.written:  # the file as exported: transcoded or anonymized too
                assert isinstance(target, FolderTarget)
                header = dicomdir.read_header(target.root / outcome.written[0].relpath)
                outcome.header = dicomdir.MediaHeader(header, str(header.file_meta.TransferSyntaxUID))
            return outcome
        except (_ArchiveDamaged, SizeMismatch):
            return _Outcome(problem=DAMAGED)
        except FileNotFoundError as exc:
            if exc.filename is not None and Path(exc.filename) == source:
                return _Outcome(problem="the archived file is missing (run `pacsctl verify`)")
            raise
        except ConvertError as exc:
            return _Outcome(problem=str(exc))

    written: list[tuple[Written, str]] = []
    headers: list[tuple[Written, dicomdir.MediaHeader, str]] = []
    summary = report.summary
    names_files = converter is not None and converter.names_files
    one_thread = isinstance(target, ZipTarget) or names_files
    threads = 1 if one_thread else COPY_THREADS
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(records), BATCH):
            batch = [
                (n, r, f"{prefix}TMP/{n:08d}" if media else "" if names_files else layout.path_of(r))
                for n, r in enumerate(records[start : start + BATCH], start)
            ]
            try:
                outcomes = list(pool.map(one, batch))
            except OSError as exc:
                raise PacsctlError(f"cannot write the export: {os.strerror(exc.errno or 0)}") from exc
            for (_, record, _), outcome in zip(batch, outcomes, strict=True):
                uid = str(record["SOPInstanceUID"])
                nbytes = sum(w.size for w in outcome.written)
                if outcome.problem:
                    report.problems.append(ExportProblem(uid, outcome.problem))
                elif outcome.skipped:
                    summary.skipped += 1
                written += [(w, uid) for w in outcome.written]
                if outcome.header is not None:
                    headers.append((outcome.written[0], outcome.header, uid))
                summary.files += len(outcome.written)
                summary.bytes += nbytes
                _tick(progress, nbytes)
    extra = getattr(converter, "extra_files", None)
    for relpath, payload in extra() if extra is not None else []:
        out = target.write_bytes(relpath, payload)
        written.append((out, ""))
        summary.files += 1
        summary.bytes += out.size
    if media and headers:
        assert isinstance(target, FolderTarget)
        written = _place_on_media(target, headers, report, prefix)
    return written


def _convert(
    target: Target, source: Path, record: Mapping[str, Any], relpath: str, converter: Converter | None
) -> _Outcome:
    assert converter is not None
    data = source.read_bytes()
    if (len(data), hashlib.sha256(data).hexdigest()) != (record.get("size"), record.get("sha256")):
        raise _ArchiveDamaged()
    outputs = converter.convert(data, record, relpath)
    if not outputs:
        return _Outcome(skipped=True)
    return _Outcome([target.write_bytes(path, payload) for path, payload in outputs])


def _place_on_media(
    target: FolderTarget,
    media: list[tuple[Written, dicomdir.MediaHeader, str]],
    report: ExportReport,
    prefix: str = "",
) -> list[tuple[Written, str]]:
    """Give the staged files the File-set's IDs and add the DICOMDIR."""
    from pacsctl.export import dicomdir

    try:
        data, ids = dicomdir.build(header for _, header, _ in media)
    except ValueError as exc:
        raise PacsctlError(f"cannot write the DICOMDIR: {exc}") from None
    placed = []
    for out, _, uid in media:
        file_id = prefix + ids[uid]
        target.rename(out.relpath, file_id)
        placed.append((Written(file_id, out.size, out.sha256), uid))
    target.remove_dir(prefix + "TMP")
    dicomdir_file = target.write_bytes(prefix + "DICOMDIR", data)
    report.summary.files += 1
    report.summary.bytes += dicomdir_file.size
    return [*placed, (dicomdir_file, "")]


def _converter(options: ExportOptions) -> Converter | None:
    """The converter the options ask for (None: the archived bytes are copied)."""
    fmt = options.format
    if fmt in (ExportFormat.PNG, ExportFormat.JPEG):
        if options.transcode or options.anonymizer is not None:
            raise UsageError("--transcode and --anonymize apply to DICOM formats, not to rendered images")
        from pacsctl.export.images import Renders
        from pacsctl.render import ImageFormat

        return Renders(
            ImageFormat(fmt.value), options.window, options.size, options.all_frames, options.sheet
        )
    if options.window is not None or options.size is not None or options.all_frames or options.sheet:
        raise UsageError("--window, --size, --frames and --sheet apply to --format png or jpeg")
    transcoder = None
    if options.transcode:
        from pacsctl.export.formats import Syntax
        from pacsctl.export.transcode import Transcoder

        transcoder = Transcoder(Syntax(options.transcode))
    if options.anonymizer is not None:
        from pacsctl.export.anonymizing import Anonymized

        return Anonymized(
            options.anonymizer, Layout(options.layout), transcoder, fmt is ExportFormat.DICOMDIR
        )
    if transcoder is not None:
        if fmt is ExportFormat.NATIVE:
            raise UsageError("--transcode applies to the folder, zip and dicomdir formats")
        return transcoder
    if fmt is ExportFormat.NATIVE:
        from pacsctl.export.native import NativeDocuments

        return NativeDocuments()
    return None


def _why_not_read_back(archive: Archive, records: list[dict[str, Any]], uid: str, reason: str) -> str:
    """A copied file checks against the ingest record only when it is read back: when it does
    not, the archived file itself tells a damaged archive from a bad copy."""
    record = next((r for r in records if r["SOPInstanceUID"] == uid), None)
    if record is None:
        return reason
    try:
        size, sha256 = sha256_file(archive.path_of(record["path"]))
    except OSError:
        return "the archived file cannot be read (run `pacsctl verify`)"
    return DAMAGED if (size, sha256) != (record.get("size"), record.get("sha256")) else reason


def _tick(progress: Progress | None, nbytes: int) -> None:
    if progress is not None:
        progress(1, nbytes)
