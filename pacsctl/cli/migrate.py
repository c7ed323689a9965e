"""`pacsctl migrate SOURCE DEST` and `pacsctl diff A B`: PACS-to-PACS migrations that resume
and prove every instance arrived, and what differs between two nodes (or a node and the archive).

The work is `pacsctl.migrate`'s; this module parses options and prints.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.interrupt import stop_on_signals
from pacsctl.cli.options import NO_METAVAR, Aet, Csv, DryRun, JsonRecords, Keys, Timeout, choices
from pacsctl.config import (
    CONFIG_NAME,
    Config,
    Node,
    load_config,
    parse_node_spec,
    resolve_archive_dir,
    validate_ae_title,
)
from pacsctl.errors import EXIT_INTEGRITY, OperationInterrupted, UsageError

if TYPE_CHECKING:
    from pacsctl.migrate.ledger import StudyEntry

STUDY_COLUMNS = ("StudyInstanceUID", "status", "source_instances", "dest_instances", "attempts", "reason")


def register(app: typer.Typer) -> None:
    """Add the `migrate` and `diff` commands."""
    app.command("migrate")(migrate_command)
    app.command("diff")(diff_command)


def _nodes(ctx: typer.Context, specs: list[str], aet: Optional[str]) -> tuple[list[Node], str, Config]:
    if state(ctx).verbosity < 2:  # our one-line errors say it; pynetdicom's ERROR lines repeat it
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    config = load_config(resolve_archive_dir(state(ctx).archive) / CONFIG_NAME)
    nodes = [parse_node_spec(spec, config) for spec in specs]
    return nodes, validate_ae_title(aet) if aet else config.ae_title, config


def _since(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    digits = value.replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        raise UsageError(f"invalid date {value!r} for --since", hint="write YYYYMMDD or YYYY-MM-DD")
    return digits


def _write_report(path: Path, records: list[dict[str, Any]]) -> None:
    """The per-study NDJSON for the change board, replaced atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def migrate_command(
    ctx: typer.Context,
    source_spec: str = typer.Argument(
        metavar="SOURCE", help="The node to migrate from (a node name or AET@host:port).", show_default=False
    ),
    dest_spec: str = typer.Argument(
        metavar="DEST", help="The node to migrate to (a node name or AET@host:port).", show_default=False
    ),
    keys: Keys = [],
    since: Optional[str] = typer.Option(
        None, "--since", metavar="DATE", help="Only studies from this StudyDate on (YYYYMMDD)."
    ),
    parallel: int = typer.Option(
        1, "--parallel", metavar="N", min=1, max=16, help="Studies moved at a time (old PACS are fragile)."
    ),
    window: Optional[str] = typer.Option(
        None,
        "--window",
        metavar="HH:MM-HH:MM",
        help="Move only inside these hours (local time), sleep outside.",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", metavar="N", min=1, help="Move at most N studies in this run."
    ),
    via_archive: bool = typer.Option(
        False,
        "--via-archive",
        metavar=NO_METAVAR,
        help="C-GET each study into the archive (hashed on arrival), then C-STORE it to DEST.",
    ),
    commit: bool = typer.Option(
        False,
        "--commit",
        metavar=NO_METAVAR,
        help="Also have DEST commit each study (Storage Commitment) before it counts as done.",
    ),
    commit_port: Optional[int] = typer.Option(
        None,
        "--commit-port",
        metavar="PORT",
        min=1,
        max=65535,
        help="Where DEST sends commitment reports (default: the archive's port; DEST must know us there).",
    ),
    commit_wait: float = typer.Option(
        60.0, "--commit-wait", metavar="SECONDS", min=0.1, help="How long to wait for a commitment report."
    ),
    dry_run: DryRun = False,
    retry_failed: bool = typer.Option(
        False, "--retry-failed", metavar=NO_METAVAR, help="Reopen the studies that failed before."
    ),
    report: Optional[Path] = typer.Option(
        None, "--report", metavar="FILE", help="Write the per-study NDJSON records to FILE."
    ),
    status_only: bool = typer.Option(
        False, "--status", metavar=NO_METAVAR, help="Show the ledger (per study, and a summary); no network."
    ),
    phi: bool = typer.Option(False, "--phi", metavar=NO_METAVAR, help="Include PatientID in the records."),
    cap: int = typer.Option(
        1000,
        "--find-cap",
        metavar="N",
        min=2,
        help="C-FIND answers at which the source is taken to cap them.",
    ),
    attempts: int = typer.Option(5, "--attempts", metavar="N", min=1, help="Tries per study and run."),
    backoff: float = typer.Option(
        2.0, "--backoff", metavar="SECONDS", min=0.0, help="First retry delay; doubles per try, at most 60 s."
    ),
    settle: float = typer.Option(
        5.0,
        "--settle",
        metavar="SECONDS",
        min=0.0,
        help="How long DEST may go without a new instance while checked.",
    ),
    aet: Aet = None,
    timeout: Timeout = 30.0,
    as_json: JsonRecords = False,
) -> None:
    """Migrate studies from SOURCE to DEST, resumably, proving every instance arrived.

    Inventories SOURCE (study-level C-FIND, in date slices when it caps answers), then moves
    study by study by C-MOVE (SOURCE must know DEST's AE title), or with --via-archive by C-GET
    into the archive and C-STORE to DEST. A study is done only when
    DEST answers an IMAGE-level C-FIND with every SOP Instance UID SOURCE listed (and, with
    --commit, has committed them all by Storage Commitment). The state of
    every study lives in the archive's ledger for the pair: a re-run continues where the last
    stopped, never sends a done study again, and sends only what DEST lacks. Transient
    failures are retried with backoff; a permanent one fails the study and the run goes on.
    Exit 0 when every study is done, 3 otherwise, 4 when SOURCE or DEST cannot be reached.

    Example: pacsctl migrate OLDPACS NEWPACS --since 20200101 --window 19:00-07:00 --json
    """
    from pacsctl.migrate import retry
    from pacsctl.migrate.ledger import Ledger
    from pacsctl.migrate.run import MigrateOptions, migrate
    from pacsctl.migrate.window import Window

    (source, dest), calling, config = _nodes(ctx, [source_spec, dest_spec], aet)
    root = resolve_archive_dir(state(ctx).archive)
    if status_only:
        ledger = Ledger.open(root, source.aet, dest.aet, create=False)
        _print_status(ledger.entries(), ledger.counts(), as_json, phi, report)
        return
    from pacsctl.dicom.matching import parse_key_values

    options = MigrateOptions(
        calling_aet=calling,
        filters=parse_key_values(keys),
        since=_since(since),
        parallel=parallel,
        window=Window.parse(window) if window else None,
        limit=limit,
        dry_run=dry_run,
        retry_failed=retry_failed,
        cap=cap,
        backoff=retry.Backoff(attempts=attempts, base=backoff),
        settle=settle,
        timeout=timeout,
        via_archive=via_archive,
        commit=commit,
        commit_host=config.host,
        commit_port=commit_port or config.port,
        commit_wait=commit_wait,
    )
    if dry_run:
        ledger = Ledger.open(root, source.aet, dest.aet, create=False)
        summary, entries = migrate(source, dest, ledger, options)
        _print_plan(entries, as_json, phi)
        return
    with (
        state(ctx).open_archive(create=True) as archive,
        output.progress(f"migrating {source.aet} -> {dest.aet}", total=None, enabled=not as_json) as bar,
    ):
        ledger = Ledger.open(archive.root, source.aet, dest.aet)

        def on_plan(count: int) -> None:
            bar.bar.update(bar.task, total=count)

        proven = [0]

        def on_study(entry: StudyEntry) -> None:
            if entry.status.value == "done":
                proven[0] += entry.dest_instances or 0
            bar.bar.update(
                bar.task, description=f"migrating {source.aet} -> {dest.aet} ({proven[0]} instances proven)"
            )
            bar.advance(1)

        with stop_on_signals() as cancel:
            summary, entries = migrate(source, dest, ledger, options, cancel, on_study, on_plan, archive)
    records = [e.as_record(phi) for e in entries]
    if report is not None:
        _write_report(report, [*records, summary.as_record()])
    if as_json:
        for record in records:
            output.json_line(record)
    else:
        unfinished = [r for r in records if r["status"] != "done"]
        if unfinished:
            output.emit(unfinished, STUDY_COLUMNS, "table", title="studies not done")
    text = (
        f"{summary.studies} studies: {summary.moved} moved ({summary.instances} instances proven at "
        f"{dest.aet}), {summary.skipped} done before, {summary.failed} failed, {summary.pending} pending "
        f"({summary.elapsed:.1f} s)"
    )
    output.summary(summary.as_record(), as_json, text)
    for day in summary.capped_days[:3]:
        output.warn(f"{source.aet} still capped its answers for {day}: studies of that day may be missing")
    if summary.interrupted:
        raise OperationInterrupted(
            "migration interrupted", hint="the same command again continues where this one stopped"
        )
    if not summary.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def _print_status(
    entries: list[StudyEntry], counts: dict[str, int], as_json: bool, phi: bool, report: Optional[Path]
) -> None:
    records = [e.as_record(phi) for e in entries]
    closing = {"type": "summary", **counts}
    if report is not None:
        _write_report(report, [*records, closing])
    output.emit(records, STUDY_COLUMNS, "json" if as_json else "table", title="migration ledger")
    text = (
        f"{counts['studies']} studies: {counts['done']} done, {counts['pending']} pending, "
        f"{counts['failed']} failed"
    )
    output.summary(closing, as_json, text)


def _print_plan(entries: list[StudyEntry], as_json: bool, phi: bool) -> None:
    records = [e.as_record(phi) for e in entries if e.status.value == "pending"]
    output.emit(records, STUDY_COLUMNS, "json" if as_json else "table", title="would move")
    closing = {"type": "summary", "studies": len(entries), "would_move": len(records), "dry_run": True}
    output.summary(closing, as_json, f"would move {len(records)} of {len(entries)} studies")


ARCHIVE_SIDE = "archive"
DIFF_COLUMNS = (
    "difference",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "a",
    "b",
    "only_in_a",
    "only_in_b",
    "example",
)


class DiffLevelName(StrEnum):
    """`diff --level`."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


def diff_command(
    ctx: typer.Context,
    a_spec: str = typer.Argument(
        metavar="A", help="A node name, AET@host:port, or `archive` (the local archive).", show_default=False
    ),
    b_spec: str = typer.Argument(metavar="B", help="The other side, as A.", show_default=False),
    keys: Keys = [],
    level: DiffLevelName = typer.Option(
        DiffLevelName.STUDY,
        "--level",
        "-l",
        metavar=choices(DiffLevelName),
        case_sensitive=False,
        help="Compare study counts, series and their counts, or SOP Instance UID sets.",
    ),
    aet: Aet = None,
    timeout: Timeout = 30.0,
    as_json: JsonRecords = False,
    as_csv: Csv = False,
) -> None:
    """Show what differs between two nodes, or a node and the local archive.

    Studies missing on either side, and for studies on both: their series and instance counts
    (study level), their series and each one's instance count (series level), or their SOP
    Instance UID sets (instance level): the report a migration's sign-off needs. Exit 0 when
    both sides agree, 3 when they differ, 4 when a node cannot be reached.

    Example: pacsctl diff OLDPACS NEWPACS -k StudyDate=2024 --level instance --json
    """
    from pacsctl.migrate.diff import DiffLevel, Finding, diff
    from pacsctl.migrate.sides import ArchiveSide, NodeSide, Side

    if as_json and as_csv:
        raise UsageError("--json and --csv exclude each other")
    from pacsctl.dicom.matching import parse_key_values

    filters = parse_key_values(keys)
    specs = [s for s in (a_spec, b_spec) if s != ARCHIVE_SIDE]
    nodes, calling, _ = _nodes(ctx, specs, aet)
    with ExitStack() as stack:
        sides: list[Side] = []
        remote = iter(nodes)
        for spec in (a_spec, b_spec):
            if spec == ARCHIVE_SIDE:
                sides.append(ArchiveSide(stack.enter_context(state(ctx).open_archive())))
            else:
                sides.append(NodeSide(next(remote), calling, timeout))
        findings: list[dict[str, Any]] = []
        writer = csv.writer(sys.stdout, lineterminator="\n") if as_csv else None
        if writer is not None:
            writer.writerow(DIFF_COLUMNS)

        def on_finding(finding: Finding) -> None:
            record = finding.as_record()
            if as_json:
                output.json_line(record)
            elif writer is not None:
                writer.writerow(["" if record.get(c) is None else record.get(c) for c in DIFF_COLUMNS])
            else:
                findings.append(record)

        summary = diff(sides[0], sides[1], filters, DiffLevel(level.value), on_finding)
    if findings:
        output.emit(findings, DIFF_COLUMNS, "table", title=f"A = {summary.a}, B = {summary.b}")
    text = (
        f"{summary.studies_a} studies in A, {summary.studies_b} in B: {summary.only_in_a} only in A, "
        f"{summary.only_in_b} only in B, {summary.differ} differ, {summary.equal} equal ({level.value} level)"
    )
    if writer is not None:
        sys.stdout.flush()
        output.summary(summary.as_record(), False, text)
    else:
        output.summary(summary.as_record(), as_json, text)
    if not summary.same:
        raise typer.Exit(EXIT_INTEGRITY)
