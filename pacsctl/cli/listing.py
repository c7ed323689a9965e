"""`pacsctl ls`: what the archive holds, at patient, study, series or instance level."""

from __future__ import annotations

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import Csv, JsonRecords, Keys, Level, LevelName
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
    level: Level = LevelName.STUDY,
    keys: Keys = [],
    as_json: JsonRecords = False,
    as_csv: Csv = False,
) -> None:
    """List what the archive holds.

    Example: pacsctl ls -k PatientName='DOE*' -k StudyDate=20240101-20240331 --json
    """
    from pacsctl.dicom.matching import compile_filters, parse_key_values
    from pacsctl.archive.search import find_records

    check_format(as_json, as_csv)
    query_level = level.query_level
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
