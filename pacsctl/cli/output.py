"""The one place that writes command output: tables, NDJSON, CSV, summaries, progress, errors.

Records go to stdout (a table fitted to the terminal for people, tab-separated lines when
piped, `--json` NDJSON or `--csv` for scripts); progress bars, logs and errors go to stderr, and
progress bars hide when stderr is not a terminal.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar, Token
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pacsctl.cli import tables

# Lines for people on stdout, never cut when piped (tables are `cli.tables`' job).
stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 250)
stderr = Console(stderr=True, soft_wrap=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def json_line(record: Mapping[str, Any]) -> None:
    """Write one NDJSON record to stdout, flushed at once (a script may be reading along)."""
    line = json.dumps(record, ensure_ascii=False, default=_json_default)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a non-UTF-8 file name (lone surrogates): \u-escape this line
        line = json.dumps(record, ensure_ascii=True, default=_json_default)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value)


def emit(
    records: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: str = "table",
    title: str | None = None,
    wide: bool = False,
    droppable: Sequence[str] = (),
) -> int:
    """Write records as a table (`table`), NDJSON (`json`) or CSV (`csv`); return the count.

    JSON records carry every key; the table and CSV show `columns`. The table fits the
    terminal (every value whole with `wide`), leaving out columns of `droppable` when they do
    not fit, and is tab-separated text when stdout is not a terminal (see `cli.tables`).
    """
    count = 0
    if fmt == "json":
        for record in records:
            json_line(record)
            count += 1
        return count
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow([_cell(record.get(c)) for c in columns])
            count += 1
        sys.stdout.flush()
        return count
    rows = list(records)
    if rows:
        left_out = tables.print_records(
            rows, columns, sys.stdout, title=title, wide=wide, droppable=droppable
        )
        if left_out:
            warn(f"left out to fit the terminal: {', '.join(left_out)} (--wide shows every column)")
    else:
        stderr.print("[dim]nothing found[/dim]")
    return len(rows)


# `--quiet` of the invocation running in this context (only errors on stderr: cron mails only
# when something is wrong). Scoped to one `app.run`, so in-process runs do not leak into each other.
_quiet: ContextVar[bool] = ContextVar("pacsctl_quiet", default=False)


def begin_run() -> Token[bool]:
    """Start an invocation's output settings (`end_run` restores the previous ones)."""
    return _quiet.set(False)


def end_run(token: Token[bool]) -> None:
    """End the invocation started by `begin_run`."""
    _quiet.reset(token)


def set_quiet(quiet: bool) -> None:
    """`--quiet` for the rest of this invocation."""
    _quiet.set(quiet)


def is_quiet() -> bool:
    """Whether this invocation runs with `--quiet`."""
    return _quiet.get()


def summary(record: Mapping[str, Any], as_json: bool, text: str) -> None:
    """An action command's closing summary: one JSON object, or one human line on stderr."""
    if as_json:
        json_line(record)
    elif not is_quiet():
        stderr.print(text, highlight=False)


def warn(message: str) -> None:
    """A one-line warning on stderr (silent with --quiet)."""
    if not is_quiet():
        stderr.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def note(message: str) -> None:
    """A one-line note on stderr: how a request was understood (silent with --quiet)."""
    if not is_quiet():
        stderr.print(f"note: {message}", highlight=False, markup=False)


def error(message: str, hint: str | None = None) -> None:
    """The one-line `error: ...` (with its hint) on stderr."""
    stderr.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    if hint:
        stderr.print(f"[dim]hint:[/dim] {hint}", highlight=False)


class Tracker:
    """Advances a progress bar by items and bytes, showing MB/s beside the count and ETA."""

    def __init__(self, bar: Progress, task: TaskID) -> None:
        self.bar, self.task, self.bytes = bar, task, 0

    def advance(self, items: int = 1, nbytes: int = 0) -> None:
        self.bytes += nbytes
        elapsed = self.bar.tasks[0].elapsed or 0.0
        rate = f"{self.bytes / elapsed / 1e6:.1f} MB/s" if elapsed > 0 and self.bytes else ""
        self.bar.update(self.task, advance=items, rate=rate)


@contextmanager
def progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Tracker]:
    """A progress bar on stderr (count, MB/s, ETA); silent when stderr is not a terminal."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not (enabled and stderr.is_terminal),
    )
    with bar:
        yield Tracker(bar, bar.add_task(description, total=total, rate=""))


# -- findings of verify, backup and reindex ---------------------------------------------------

FINDING_COLUMNS = ("where", "problem", "path", "SOPInstanceUID", "action", "detail")
TABLE_LIMIT = 200  # rows a table shows; a lost index can mean a million findings


class LazyProgress:
    """A progress bar opened once the core knows the total (and closed with the command)."""

    def __init__(self, description: str, enabled: bool) -> None:
        self.description, self.enabled = description, enabled
        self.stack = ExitStack()
        self.tracker: Tracker | None = None

    def start(self, total: int) -> None:
        self.tracker = self.stack.enter_context(progress(self.description, total, self.enabled))

    def advance(self, files: int, nbytes: int) -> None:
        if self.tracker is not None:
            self.tracker.advance(files, nbytes)

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


def print_findings(findings: Sequence[Mapping[str, Any]], as_json: bool, title: str) -> None:
    """Finding records as NDJSON, or a table capped at TABLE_LIMIT rows (the rest counted)."""
    if as_json:
        for record in findings:
            json_line(record)
        return
    if findings:
        emit(findings[:TABLE_LIMIT], FINDING_COLUMNS, "table", title=title)
    if len(findings) > TABLE_LIMIT:
        counts = Counter(str(r["problem"]) for r in findings[TABLE_LIMIT:])
        more = ", ".join(f"{n} {problem}" for problem, n in counts.most_common())
        warn(f"{len(findings) - TABLE_LIMIT} more not shown ({more}): use --json or --report for all")


def print_report(records: Sequence[Mapping[str, Any]], as_json: bool, title: str, text: str) -> None:
    """A checking command's output: its findings, then its closing summary (the last record,
    `"type": "summary"`) as JSON or as the one human line `text`."""
    *findings, closing = records
    print_findings(findings, as_json, title)
    summary(closing, as_json, text)
