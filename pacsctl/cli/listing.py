"""`pacsctl ls`: what the archive holds, at patient, study, series or instance level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import NO_METAVAR, Csv, JsonRecords, Keys, Level, LevelName
from pacsctl.errors import UsageError

COLUMNS = {
    "PATIENT": [
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
    ],
    "STUDY": [
        "PatientID",
        "PatientName",
        "StudyDate",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyInstanceUID",
    ],
    "SERIES": [
        "PatientID",
        "StudyDate",
        "SeriesNumber",
        "Modality",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
        "SeriesInstanceUID",
    ],
    "IMAGE": [
        "SeriesInstanceUID",
        "InstanceNumber",
        "SOPClassUID",
        "TransferSyntaxUID",
        "size",
        "SOPInstanceUID",
    ],
}
# Left out first when a terminal is too narrow for every column (--wide shows them).
DROPPABLE = {
    "PATIENT": ("PatientBirthDate",),
    "STUDY": ("AccessionNumber", "StudyDescription", "NumberOfStudyRelatedSeries"),
    "SERIES": ("SeriesDescription", "StudyDate"),
    "IMAGE": ("TransferSyntaxUID", "SOPClassUID"),
}
SORT_KEYS = {
    "PATIENT": ("PatientName", "PatientID"),
    "STUDY": ("StudyDate", "StudyTime", "StudyInstanceUID"),
    "SERIES": ("StudyDate", "StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID"),
    "IMAGE": ("SeriesInstanceUID", "InstanceNumber", "SOPInstanceUID"),
}


# How records are shown: shared by `ls` and `query`.
Sort = Annotated[
    Optional[str],
    typer.Option(
        "--sort",
        metavar="KEY[,KEY]",
        help="Sort by these keywords (a leading - sorts descending: --sort=-StudyDate).",
    ),
]
Limit = Annotated[
    Optional[int], typer.Option("--limit", metavar="N", min=0, help="Show at most N records (after sorting).")
]
ColumnsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--columns",
        metavar="A,B,C",
        help="Show these keywords, in this order (also the keys of --json records).",
    ),
]
Wide = Annotated[
    bool,
    typer.Option(
        "--wide",
        "-w",
        metavar=NO_METAVAR,
        help="Table: every value whole (UIDs too), wider than the terminal if need be.",
    ),
]

# Record keys that are not DICOM keywords (instance records say where and what the file is).
_FILE_KEYS = {"size": "size", "path": "path", "sha256": "sha256"}


@dataclass(frozen=True)
class SortKey:
    """One `--sort` key."""

    keyword: str
    descending: bool = False


@dataclass(frozen=True)
class ListView:
    """What `ls` and `query` show: order, how many, which columns, whole values or fitted."""

    sort: tuple[SortKey, ...] = ()
    limit: int | None = None
    columns: tuple[str, ...] = ()
    wide: bool = False


def record_key(name: str) -> str:
    """The record key a user names: a DICOM keyword in any case or a tag, or size/path/sha256."""
    from pacsctl.dicom.matching import resolve_keyword

    text = name.strip()
    return _FILE_KEYS.get(text.lower()) or resolve_keyword(text)


def list_view(
    sort: str | None = None, limit: int | None = None, columns: str | None = None, wide: bool = False
) -> ListView:
    """The ListView of the `--sort`, `--limit`, `--columns` and `--wide` options."""
    keys = []
    for item in (sort or "").split(","):
        item = item.strip()
        if item:
            descending = item.startswith("-")
            keys.append(SortKey(record_key(item.lstrip("-")), descending))
    shown = tuple(dict.fromkeys(record_key(c) for c in (columns or "").split(",") if c.strip()))
    if columns is not None and not shown:
        raise UsageError(
            "--columns names no column", hint="for example --columns PatientID,StudyDate,StudyInstanceUID"
        )
    return ListView(tuple(keys), limit, shown, wide)


def register(app: typer.Typer) -> None:
    """Add the `ls` command."""
    app.command("ls")(ls_command)


def ls_command(
    ctx: typer.Context,
    level: Level = LevelName.STUDY,
    keys: Keys = [],
    sort: Sort = None,
    limit: Limit = None,
    columns: ColumnsOpt = None,
    wide: Wide = False,
    as_json: JsonRecords = False,
    as_csv: Csv = False,
) -> None:
    """List what the archive holds.

    On a terminal the table fits its width (long UIDs shortened in the middle; --wide shows
    them whole); piped or redirected, it prints tab-separated lines with a header line.
    At study level, -k Modality=MR means ModalitiesInStudy=MR (a study holds series of
    several modalities).

    Example: pacsctl ls -k PatientName='DOE*' -k StudyDate=20240101-20240331 --sort=-StudyDate --limit 20
    """
    from pacsctl.archive.search import find_records
    from pacsctl.dicom.matching import compile_filters, parse_key_values

    check_format(as_json, as_csv)
    view = list_view(sort, limit, columns, wide)
    query_level = level.query_level
    flt = compile_filters(parse_key_values(keys))
    archive = state(ctx).open_archive()
    emit_level(find_records(archive.index, query_level, flt), query_level, as_json, as_csv, view)


def check_format(as_json: bool, as_csv: bool) -> None:
    """--json and --csv exclude each other."""
    if as_json and as_csv:
        raise UsageError("--json and --csv exclude each other")


def emit_level(
    records: list[dict], level: str, as_json: bool, as_csv: bool, view: ListView = ListView()
) -> None:
    """Sort records of a query level the way `ls` does (or as `view` says), cut them to the
    view's limit and write the view's columns (shared by `query`)."""
    records.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in SORT_KEYS[level]))
    for key in reversed(view.sort):  # stable sorts, last key first: the first key wins
        records.sort(key=lambda r: _sortable(r.get(key.keyword)), reverse=key.descending)
    total = len(records)
    if view.limit is not None and total > view.limit:
        del records[view.limit :]
        output.warn(f"showing {view.limit} of {total} records (--limit)")
    columns = list(view.columns) or COLUMNS[level]
    if as_json and view.columns:
        records = [{k: r.get(k) for k in columns} for r in records]
    output.emit(
        records,
        columns,
        "json" if as_json else "csv" if as_csv else "table",
        wide=view.wide,
        droppable=() if view.columns else DROPPABLE[level],
    )


def _sortable(value: object) -> tuple[int, object]:
    """Numbers before text; a peer may answer a number as text or not at all."""
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, "" if value is None else str(value))
