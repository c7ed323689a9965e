"""Records as text for people: a table fitted to the terminal, or plain tab-separated lines.

On a terminal the table takes the terminal's width: UIDs are shortened in the middle
(`1.2.840.1…4567.89`, both ends are what tells UIDs apart), long text ends in `…`, short values
(dates, numbers, codes) stay whole; `wide` shows everything at full length. When stdout is not
a terminal (a pipe, a file, cron mail) there is no table at all: a header line of keywords and
one tab-separated line per record, values whole (after the title line of a report that has one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import IO, Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

ELLIPSIS = "…"
# Two characters between columns: one of padding, one of the (blank) divider.
_GAP = 2

# Short table headers for long DICOM keywords (TSV, JSON and CSV keep the keywords).
HEADERS = {
    "NumberOfPatientRelatedStudies": "Studies",
    "NumberOfPatientRelatedInstances": "Instances",
    "NumberOfStudyRelatedSeries": "Series",
    "NumberOfStudyRelatedInstances": "Instances",
    "NumberOfSeriesRelatedInstances": "Instances",
    "ModalitiesInStudy": "Modalities",
    "AccessionNumber": "Accession",
    "StudyDescription": "Description",
    "SeriesDescription": "Description",
    "PatientBirthDate": "Birth",
    "SeriesNumber": "No.",
    "InstanceNumber": "No.",
    "TransferSyntaxUID": "Syntax",
    "StudyDate": "Date",
    "StudyTime": "Time",
    "SeriesDate": "Date",
    "PatientSex": "Sex",
    "calling_aet": "calling",
    "called_aet": "called",
}


class ColumnKind(Enum):
    """How a column gives way when the table is too wide for the terminal."""

    WRAPPED = "wrapped"  # free text that folds onto more lines instead (an audit record's detail)
    UID = "uid"  # shortened first, in the middle
    TEXT = "text"  # names, descriptions: cut at the end with an ellipsis
    ID = "id"  # patient IDs, accession numbers: cut only when names and descriptions are short
    FIXED = "fixed"  # dates, numbers, codes: short, kept whole (their header is cut last)


_FIXED_KEYS = frozenset(
    {
        "Modality",
        "ModalitiesInStudy",
        "PatientSex",
        "size",
        "status",
        "event",
        "time",
        "peer",
        "calling_aet",
        "called_aet",
    }
)
_WRAPPED_KEYS = frozenset({"detail"})
_ID_KEYS = frozenset({"PatientID", "AccessionNumber", "StudyID", "OtherPatientIDs"})
# The narrowest a column is made before lower-priority columns are left out instead.
_MIN_WIDTH = {ColumnKind.WRAPPED: 20, ColumnKind.UID: 16, ColumnKind.TEXT: 10, ColumnKind.ID: 16}
_MIN_HEADER = 4
_SHRINK_ORDER = (ColumnKind.WRAPPED, ColumnKind.UID, ColumnKind.TEXT, ColumnKind.ID, ColumnKind.FIXED)


def column_kind(key: str) -> ColumnKind:
    """The kind of the column showing `key`."""
    if key in _WRAPPED_KEYS:
        return ColumnKind.WRAPPED
    if key.endswith("UID"):
        return ColumnKind.UID
    if key in _ID_KEYS:
        return ColumnKind.ID
    if key in _FIXED_KEYS or key.startswith("NumberOf") or key.endswith(("Date", "Time", "Number")):
        return ColumnKind.FIXED
    return ColumnKind.TEXT


def cell_text(value: Any) -> str:
    """A record value as one line of text: lists joined with a backslash (DICOM's separator)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = "\\".join(str(v) for v in value)
    text = str(value)
    if "\t" in text or "\n" in text or "\r" in text:
        text = " ".join(text.split())  # one record, one line, whatever a description holds
    return text


def shorten_middle(text: str, width: int) -> str:
    """`text` cut to `width` cells by an ellipsis in the middle."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def fit_widths(
    natural: Sequence[int], minimum: Sequence[int], kinds: Sequence[ColumnKind], available: int
) -> list[int]:
    """Column widths that fit `available` cells: wrapped text and UID columns give way first,
    then text, IDs and the headers of fixed columns, the widest column of a kind first, none
    below its minimum. The sum may stay above `available` when even the minimums do not fit."""
    widths = list(natural)
    excess = sum(widths) - available
    for kind in _SHRINK_ORDER:
        while excess > 0:
            candidates = [i for i, k in enumerate(kinds) if k is kind and widths[i] > minimum[i]]
            if not candidates:
                break
            widest = max(candidates, key=lambda i: widths[i])
            widths[widest] -= 1
            excess -= 1
    return widths


def write_tsv(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], file: IO[str], title: str | None = None
) -> None:
    """The title line when there is one (a report's, for the people reading cron mail), a header
    line of keywords, then one tab-separated line per record."""
    if title:
        file.write(title + "\n")
    file.write("\t".join(columns) + "\n")
    for row in rows:
        file.write("\t".join(cell_text(row.get(c)) for c in columns) + "\n")
    file.flush()


def _natural_widths(cells: Sequence[Sequence[str]], headers: Sequence[str]) -> tuple[list[int], list[int]]:
    """The widest value of each column, and that or its header's width."""
    values = [max((cell_len(r[i]) for r in cells), default=0) for i in range(len(headers))]
    return values, [max(v, cell_len(h)) for v, h in zip(values, headers, strict=True)]


def _minimum(value: int, header: str, natural: int, kind: ColumnKind, fixed_whole: bool) -> int:
    if kind is ColumnKind.FIXED:
        return natural if fixed_whole else max(value, min(cell_len(header), _MIN_HEADER))
    return min(natural, _MIN_WIDTH[kind])


@dataclass
class FittedTable:
    """A table for the terminal and the columns left out to make it fit."""

    table: Table
    left_out: list[str]
    width: int  # cells the table takes


def fitted_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    width: int | None,
    title: str | None = None,
    droppable: Sequence[str] = (),
) -> FittedTable:
    """A table of `rows` fitting `width` cells (None: every value whole). When the columns do
    not fit at readable widths, those in `droppable` are left out, first named first."""
    shown = list(columns)
    left_out: list[str] = []
    while True:
        headers = [HEADERS.get(c, c) for c in shown]
        cells = [[cell_text(row.get(c)) for c in shown] for row in rows]
        kinds = [column_kind(c) for c in shown]
        values, natural = _natural_widths(cells, headers)
        if width is None:
            widths = natural
            break
        available = width - _GAP * (len(shown) - 1)
        columns_now = list(zip(values, headers, natural, kinds, strict=True))
        readable = [_minimum(v, h, n, k, True) for v, h, n, k in columns_now]
        drop = next((c for c in droppable if c in shown), None)
        if sum(readable) <= available or drop is None:
            minimum = [_minimum(v, h, n, k, False) for v, h, n, k in columns_now]
            widths = fit_widths(natural, minimum, kinds, available)
            break
        shown.remove(drop)
        left_out.append(drop)
    table = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        header_style="bold",
    )
    for header, w, kind in zip(headers, widths, kinds, strict=True):
        wraps = kind is ColumnKind.WRAPPED
        table.add_column(header, width=w, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for row in cells:
        table.add_row(
            *(
                shorten_middle(text, w) if k is ColumnKind.UID else text
                for text, w, k in zip(row, widths, kinds, strict=True)
            )
        )
    return FittedTable(table, left_out, sum(widths) + _GAP * (len(widths) - 1))


def print_records(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    file: IO[str],
    title: str | None = None,
    wide: bool = False,
    droppable: Sequence[str] = (),
) -> list[str]:
    """`rows` for people on `file`: a fitted table on a terminal (every value and column whole
    with `wide`), tab-separated lines elsewhere. Returns the columns left out to fit."""
    console = Console(file=file, soft_wrap=False)
    if not console.is_terminal:
        write_tsv(rows, columns, file, title)
        return []
    fitted = fitted_table(rows, columns, None if wide else console.width, title, droppable)
    if wide:  # wider than the terminal if need be: the terminal wraps, nothing is cut
        console = Console(file=file, width=max(console.width, fitted.width))
    console.print(fitted.table)
    return fitted.left_out
