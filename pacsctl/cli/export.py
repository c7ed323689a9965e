"""`pacsctl export DEST`: studies out of the archive as folders, DICOM media or zip files."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pacsctl.archive.audit import AuditEvent, record_action
from pacsctl.cli import output
from pacsctl.cli.interrupt import stop_on_signals
from pacsctl.cli.options import NO_METAVAR, JsonSummary, choices
from pacsctl.errors import EXIT_INTEGRITY, UsageError
from pacsctl.export.formats import DEFAULT_LAYOUT, ExportFormat, Syntax


class FrameChoice(StrEnum):
    """Which frames png/jpeg export renders."""

    FIRST = "first"
    ALL = "all"


Frames = Annotated[
    FrameChoice,
    typer.Option(
        "--frames", metavar=choices(FrameChoice), case_sensitive=False, help="png/jpeg: frames to render."
    ),
]
Transcode = Annotated[
    Optional[Syntax],
    typer.Option(
        "--transcode",
        metavar=choices(Syntax),
        case_sensitive=False,
        help="Write the instances in this transfer syntax (lossless: pixel values kept).",
    ),
]
Format = Annotated[
    ExportFormat,
    typer.Option(
        "--format", "-f", metavar=choices(ExportFormat), case_sensitive=False, help="What to write."
    ),
]


def export(
    ctx: typer.Context,
    dest: Path = typer.Argument(
        ..., metavar="DEST", help="A new folder (or .zip file) to create.", show_default=False
    ),
    studies: list[str] = typer.Option([], "--study", metavar="UID", help="Export this study (repeatable)."),
    patient: Optional[str] = typer.Option(
        None, "--patient", metavar="ID", help="Every study of this patient."
    ),
    keys: list[str] = typer.Option(
        [],
        "-k",
        "--filter",
        metavar="KEY=VALUE",
        help="Export the archived instances this selects (`pacsctl ls` matching; repeatable).",
    ),
    everything: bool = typer.Option(False, "--all", metavar=NO_METAVAR, help="Export the whole archive."),
    fmt: Format = ExportFormat.FOLDER,
    layout: str = typer.Option(
        DEFAULT_LAYOUT, "--layout", metavar="TEMPLATE", help="Folder and file names (folder and zip formats)."
    ),
    window: Optional[str] = typer.Option(
        None, "--window", metavar="C,W", help="png/jpeg: window center,width (default: the file's)."
    ),
    size: Optional[int] = typer.Option(
        None, "--size", metavar="N", min=1, help="png/jpeg: fit images in N x N pixels (thumbnails)."
    ),
    frames: Frames = FrameChoice.FIRST,
    sheet: bool = typer.Option(
        False, "--sheet", metavar=NO_METAVAR, help="png/jpeg: a contact sheet per series."
    ),
    transcode: Transcode = None,
    anonymize: bool = typer.Option(
        False, "--anonymize", metavar=NO_METAVAR, help="Pass every file through the anonymizer (PS3.15)."
    ),
    key: Optional[str] = typer.Option(
        None,
        "--key",
        metavar="SECRET",
        help="--anonymize: the secret for UIDs and pseudonyms (see anonymize).",
    ),
    key_file: Optional[Path] = typer.Option(
        None, "--key-file", metavar="FILE", help="--anonymize: read the secret from FILE."
    ),
    media_size: Optional[str] = typer.Option(
        None, "--media-size", metavar="SIZE", help="dicomdir: split over volumes of SIZE (700M, 4.7G, 25G)."
    ),
    iso: Optional[Path] = typer.Option(
        None, "--iso", metavar="FILE.iso", help="dicomdir: also write an ISO 9660 image (one per volume)."
    ),
    as_json: JsonSummary = False,
) -> None:
    """Export studies to a folder, DICOM media (DICOMDIR) or a zip file.

    The files are the archived bytes, checked against the SHA-256 recorded at ingest. Every
    export holds MANIFEST.sha256 (`sha256sum -c MANIFEST.sha256` checks it); each file is read
    back before the export is declared done, and the export is written beside DEST and renamed
    to DEST only when complete. Layout fields are index fields ({PatientID}, {StudyDate},
    {AccessionNumber}, {SeriesNumber:03}, {SeriesDescription}, {InstanceNumber:05}, ...); every
    name is made safe for Windows, macOS and Linux file systems. Exit 3 when some instance could
    not be exported.

    png/jpeg render each image (--window C,W, --size N, --frames all, --sheet); --transcode
    writes another transfer syntax (lossless); --anonymize --key-file K de-identifies every file
    (and names them from the de-identified values). dicomdir: --media-size 700M splits the export
    over DISK001/, DISK002/... each a complete media set; --iso FILE.iso writes the image to burn.

    Example: pacsctl export /media/usb/ct --study 1.2.840.113619.2.1 --format dicomdir
    """
    from pacsctl.cli.app import state
    from pacsctl.dicom.matching import parse_key_values
    from pacsctl.export.media import parse_size
    from pacsctl.export.run import ExportOptions
    from pacsctl.export.run import export as run_export

    filters = parse_key_values(keys)
    if studies:
        if "StudyInstanceUID" in filters:
            raise UsageError("give the study either with --study or with -k StudyInstanceUID, not both")
        filters["StudyInstanceUID"] = "\\".join(studies)
    if patient is not None:
        if "PatientID" in filters:
            raise UsageError("give the patient either with --patient or with -k PatientID, not both")
        filters["PatientID"] = patient
    if not filters and not everything:
        raise UsageError("nothing selected", hint="give --study UID, --patient ID, -k KEY=VALUE or --all")
    opts = state(ctx)
    options = ExportOptions(
        format=fmt,
        layout=layout,
        transcode=transcode.value if transcode else None,
        window=_window(window) if window else None,
        size=size,
        all_frames=frames is FrameChoice.ALL,
        sheet=sheet,
        anonymizer=_anonymizer(key, key_file) if anonymize else None,
        media_size=parse_size(media_size) if media_size else None,
        iso=iso,
    )
    if (key or key_file) and not anonymize:
        raise UsageError("--key and --key-file go with --anonymize")
    with (
        opts.open_archive(create=False) as archive,
        output.LazyProgress("export", opts.verbosity >= 0 and not as_json) as bar,
        stop_on_signals() as cancel,
    ):
        report = run_export(
            archive,
            dest,
            filters,
            options,
            progress=bar.advance,
            should_stop=lambda: cancel.requested,
            on_total=bar.start,
        )
    s = report.summary
    records = [p.as_dict() for p in report.problems] + [
        {"type": "summary", "command": "export", **s.as_dict()}
    ]
    text = (
        f"exported {s.exported} instances to {s.dest} ({s.format}): {s.files} files, "
        f"{s.bytes / 1e6:.1f} MB, {s.errors} errors, {s.skipped} skipped; {s.elapsed:.1f} s"
    )
    if s.volumes > 1:
        text += f"; {s.volumes} volumes"
    if s.iso:
        text += f"; ISO: {', '.join(s.iso)}"
    output.print_report(records, as_json, "export: not exported", text)
    record_action(archive.root, AuditEvent.EXPORT, s.as_dict(), selection=filters, dest=s.dest)
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def _window(text: str) -> Any:
    """--window C,W as render.Window (imported here: render pulls in numpy, PIL and pydicom)."""
    from pacsctl.render import Window

    return Window.parse(text)


def _anonymizer(key: str | None, key_file: Path | None) -> Any:
    """The anonymizer for --anonymize: keyed (the same key, the same UIDs and pseudonyms as
    `pacsctl anonymize`), Basic Profile options."""
    from pacsctl.anonymize.deidentify import Anonymizer
    from pacsctl.anonymize.identity import read_key_file

    if key is not None and key_file is not None:
        raise UsageError("--key and --key-file exclude each other", hint="give the secret one way")
    secret = read_key_file(key_file) if key_file else (key.encode("utf-8") if key else b"")
    if not secret:
        raise UsageError(
            "--anonymize needs --key or --key-file", hint="the key makes the same UIDs on every run"
        )
    return Anonymizer(secret)


def register(app: typer.Typer) -> None:
    """Add `export` to the app."""
    app.command("export")(export)
