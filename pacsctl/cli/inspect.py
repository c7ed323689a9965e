"""`pacsctl show` (what the archive knows about a study) and `pacsctl dump` (an instance's
header as text or DICOM JSON)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.options import NO_METAVAR, JsonRecords
from pacsctl.errors import InvalidDicomError, UsageError

if TYPE_CHECKING:
    from pacsctl.archive.describe import StudyView

SERIES_COLUMNS = ["SeriesNumber", "Modality", "instances", "bytes", "SeriesDescription", "SeriesInstanceUID"]


def show(
    ctx: typer.Context,
    uid: Optional[str] = typer.Argument(
        None, metavar="UID", help="A study, series or instance UID.", show_default=False
    ),
    patient: Optional[str] = typer.Option(
        None, "--patient", metavar="ID", help="Every study of this patient."
    ),
    as_json: JsonRecords = False,
) -> None:
    """What the archive knows about a study: patient, dates, series, files, arrival, checks.

    A series or instance UID shows the study it belongs to. Arrival is when the archive stored
    the files; the senders are the AE titles of the `store` records in the audit log (imported
    files have none); the last backup and the last verify of the archive say whether they ran
    after the study's last arrival.

    Example: pacsctl show 1.2.840.113619.2.1; pacsctl show --patient P1 --json
    """
    from pacsctl.archive.describe import describe
    from pacsctl.cli.app import state

    if (uid is None) == (patient is None):
        raise UsageError(
            "give a UID or --patient ID (one of them)", hint="e.g. pacsctl show 1.2.840.113619.2.1"
        )
    with state(ctx).open_archive(create=False) as archive:
        views = describe(archive, uid=uid, patient_id=patient)
    if as_json:
        for view in views:
            output.json_line({"type": "study", **view.as_dict()})
        return
    for n, view in enumerate(views):
        if n:
            print()
        for label, value in _study_lines(view):
            print(f"  {label:<12} {value}" if label else value)
        output.emit(
            [{**s.fields, "instances": s.instances, "bytes": s.bytes} for s in view.series],
            SERIES_COLUMNS,
            title="series",
        )


def _study_lines(view: StudyView) -> list[tuple[str, str]]:
    f = view.fields
    modalities = f.get("ModalitiesInStudy") or []
    modalities = "\\".join(modalities) if isinstance(modalities, list) else str(modalities)
    patient = (
        f"{f.get('PatientName') or '-'} (ID {f.get('PatientID') or '-'}, "
        f"born {f.get('PatientBirthDate') or '-'}, sex {f.get('PatientSex') or '-'})"
    )
    holds = f"{len(view.series)} series, {view.instances} instances, {view.bytes / 1e6:.1f} MB"
    holds += f" ({modalities or '-'})"
    missing = f"; {view.missing_files} files missing (run `pacsctl verify`)" if view.missing_files else ""
    senders = ", ".join(f"{aet} ({count})" for aet, count in view.senders.items())
    backup = view.last_backup
    if backup is None:
        backed_up = "none recorded"
    else:
        covers = "after the last arrival" if backup["covers"] else "BEFORE the last arrival: not in it"
        backed_up = f"{backup['time']} to {backup['dest']} ({covers})"
    return [
        ("", f"Study {f['StudyInstanceUID']}"),
        ("patient", patient),
        ("date", f"{f.get('StudyDate') or '-'} {f.get('StudyTime') or ''}".rstrip()),
        ("accession", f"{f.get('AccessionNumber') or '-'}; study ID {f.get('StudyID') or '-'}"),
        ("description", f.get("StudyDescription") or "-"),
        ("holds", holds),
        ("files", f"under {view.files_under}{missing}"),
        ("arrived", f"{view.first_arrival or '-'} .. {view.last_arrival or '-'}"),
        ("sent by", senders or "none recorded (imported, or before the audit log)"),
        ("last backup", backed_up),
        ("last verify", _verified(view.last_verify)),
    ]


def _verified(verify: dict | None) -> str:
    if verify is None:
        return "none recorded"
    covers = "after the last arrival" if verify["covers"] else "BEFORE the last arrival: not in it"
    return f"{verify['time']} ({verify['mode']}, {verify['status']}; {covers})"


def dump(
    ctx: typer.Context,
    target: str = typer.Argument(
        ..., metavar="UID|PATH", help="An archived SOP Instance UID or a DICOM file.", show_default=False
    ),
    as_json: bool = typer.Option(
        False, "--json", metavar=NO_METAVAR, help="The DICOM JSON model (PS3.18 F.2), one object."
    ),
    width: int = typer.Option(72, "--width", metavar="N", min=8, help="Cut text values to N characters."),
) -> None:
    """Print an instance's header: dcmdump-like text, or DICOM JSON.

    Sequences are indented, values cut to --width, binary values and pixel data summarised.
    With --json, values over 1 KiB (pixel data) are a BulkDataURI naming the file and the
    element instead of inline base64.

    Example: pacsctl dump 1.2.840.113619.2.1.1.1; pacsctl dump /media/cdrom/IM0001 --json
    """
    import warnings

    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError as PydicomInvalid

    from pacsctl.cli.app import state
    from pacsctl.dicom.dumping import dicom_json, dump_lines

    path = Path(target)
    if not path.is_file():
        with state(ctx).open_archive(create=False) as archive:
            record = archive.instance_record(target)
            if record is None or not record.get("path"):
                raise UsageError(
                    f"no file {target} and no archived instance with that UID",
                    hint="see `pacsctl ls --level instance`",
                )
            path = archive.path_of(record["path"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, defer_size=4096, force=False)
    except (PydicomInvalid, OSError, ValueError) as exc:
        raise InvalidDicomError(f"{path} is not a readable DICOM file ({type(exc).__name__})") from None
    if as_json:
        output.json_line(dicom_json(ds, file_uri=path.resolve().as_uri()))
        return
    for line in dump_lines(ds, width=width):
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    """Add `show` and `dump` to the app."""
    app.command("show")(show)
    app.command("dump")(dump)
