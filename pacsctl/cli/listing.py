"""`pacsctl ls`: what the archive holds, at patient, study, series or instance level."""

from __future__ import annotations

from typing import List

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.errors import UsageError

COLUMNS = {
    "PATIENT": ["PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedInstances"],
    "STUDY": ["PatientID", "PatientName", "StudyDate", "AccessionNumber", "StudyDescription",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyInstanceUID"],
    "SERIES": ["PatientID", "StudyDate", "SeriesNumber", "Modality", "SeriesDescription",
               "NumberOfSeriesRelatedInstances", "SeriesInstanceUID"],
    "IMAGE": ["SeriesInstanceUID", "InstanceNumber", "SOPClassUID", "TransferSyntaxUID", "size", "SOPInstanceUID"],
}
SORT_KEYS = {
    "PATIENT": ("PatientName", "PatientID"),
    "STUDY": ("StudyDate", "StudyTime", "StudyInstanceUID"),
    "SERIES": ("StudyDate", "StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID"),
    "IMAGE": ("SeriesInstanceUID", "InstanceNumber", "SOPInstanceUID"),
}


def register(app: typer.Typer) -> None:
    """Add the `ls` command."""
    app.command("ls")(ls_command)


def ls_command(
    ctx: typer.Context,
    level: str = typer.Option("study", "--level", "-l", help="patient, study, series or instance."),
    keys: List[str] = typer.Option(
        [], "--key", "-k", metavar="KEY=VALUE",
        help="Filter on a DICOM keyword with DICOM matching: wildcards * ?, ranges 20240101-20240331, UID lists a\\b.",
    ),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one record per line, keyed by DICOM keywords."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header row."),
) -> None:
    """List what the archive holds.

    Example: pacsctl ls -k PatientName='DOE*' -k StudyDate=20240101-20240331 --json
    """
    from pacsctl.dicom.matching import compile_filters, level_from_name, parse_key_values
    from pacsctl.archive.search import find_records

    check_format(as_json, as_csv)
    query_level = level_from_name(level)
    flt = compile_filters(parse_key_values(keys))
    archive = state(ctx).open_archive()
    emit_level(find_records(archive.index, query_level, flt), query_level, as_json, as_csv)


def check_format(as_json: bool, as_csv: bool) -> None:
    """--json and --csv exclude each other."""
    if as_json and as_csv:
        raise UsageError("--json and --csv exclude each other")


def emit_level(records: list[dict], level: str, as_json: bool, as_csv: bool) -> None:
    """Sort records of a query level the way `ls` does and write them (shared by `query`)."""
    records.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in SORT_KEYS[level]))
    output.emit(records, COLUMNS[level], "json" if as_json else "csv" if as_csv else "table")


def _sortable(value: object) -> tuple[int, object]:
    """Numbers before text; a peer may answer a number as text or not at all."""
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, "" if value is None else str(value))
