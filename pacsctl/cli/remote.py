"""`pacsctl echo`, `send`, `query`, `move`, `get`: talk to remote DICOM nodes as an SCU.

Every command takes a node name from `pacsctl nodes` or an inline `AET@host:port`; the calling
AE title is the archive's `ae_title` unless `--aet` overrides it. TLS comes from the node's
settings (`pacsctl nodes add --tls ...`).
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from pacsctl.archive.audit import AuditEvent, record_action
from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.interrupt import stop_on_signals
from pacsctl.cli.listing import ColumnsOpt, Limit, Sort, Wide, check_format, emit_level, list_view
from pacsctl.cli.options import (
    Aet,
    All,
    Csv,
    DecompressOpt,
    DecompressPolicy,
    JsonRecords,
    JsonSummary,
    Keys,
    Level,
    LevelName,
    NodeArg,
    RetrieveLevel,
    Studies,
    Timeout,
)
from pacsctl.config import (
    CONFIG_NAME,
    Config,
    Node,
    load_config,
    parse_node_spec,
    resolve_archive_dir,
    validate_ae_title,
)
from pacsctl.errors import (
    EXIT_INTEGRITY,
    EXIT_NETWORK,
    NetworkError,
    NetworkFailure,
    OperationInterrupted,
    PacsctlError,
    UsageError,
)

if TYPE_CHECKING:
    from pacsctl.remote.retrieve import RetrieveSummary
    from pacsctl.remote.send import SendItem, SendSummary

# The core (pydicom, pynetdicom) is imported inside each command: every other `pacsctl`
# command, `--help` and completion would otherwise pay ~0.5 s for it at start-up.


def register(app: typer.Typer) -> None:
    """Add the `echo`, `send`, `query`, `move` and `get` commands."""
    for name, command in (
        ("echo", echo_command),
        ("send", send_command),
        ("query", query_command),
        ("move", move_command),
        ("get", get_command),
    ):
        app.command(name)(_with_flag_hints(command))


def _with_flag_hints(command: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(command)  # typer reads the signature and docstring through it
    def run(*args: Any, **kwargs: Any) -> None:
        with _flag_hints():
            command(*args, **kwargs)

    return run


def _setup(ctx: typer.Context, spec: str, aet: Optional[str]) -> tuple[Node, str, Config]:
    """The node, the calling AE title and the archive config (read only: no archive is created)."""
    if state(ctx).verbosity < 2:  # our one-line error says it; pynetdicom's ERROR lines repeat it
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    config = load_config(resolve_archive_dir(state(ctx).archive) / CONFIG_NAME)
    node = parse_node_spec(spec, config)
    return node, validate_ae_title(aet) if aet else config.ae_title, config


# What the CLI adds to the net layer's hints: the flags that change the outcome.
_FLAG_HINTS = {
    NetworkFailure.TIMEOUT: "`--timeout SECONDS` waits longer",
    NetworkFailure.TLS: "see `pacsctl nodes add --tls-ca/--tls-cert/--tls-key`",
}


@contextmanager
def _flag_hints() -> Iterator[None]:
    """Name the options that address a network failure in its hint."""
    try:
        yield
    except NetworkError as exc:
        extra = _FLAG_HINTS.get(exc.failure) if exc.failure else None
        if extra:
            exc.hint = f"{exc.hint}; {extra}" if exc.hint else extra
        raise


def _filters(keys: list[str], level_name: LevelName) -> tuple[str, dict[str, str]]:
    from pacsctl.dicom.matching import parse_key_values

    return level_name.query_level, parse_key_values(keys)


@contextmanager
def _failure_audited(
    ctx: typer.Context, event: AuditEvent, selection: dict[str, str], **details: Any
) -> Iterator[None]:
    """A send, move or get that fails outright (unreachable, rejected, lost, stopped while
    listing) writes its audit record too: status `failed` (or `interrupted`), the error's
    one line (never patient data) and its typed failure."""
    try:
        yield
    except PacsctlError as exc:
        interrupted = isinstance(exc, OperationInterrupted)
        failure = getattr(exc, "failure", None)
        record_action(
            resolve_archive_dir(state(ctx).archive),
            event,
            {"status": "interrupted" if interrupted else "failed"},
            selection=selection,
            error=str(exc),
            failure=failure.value if failure is not None else None,
            **details,
        )
        raise


# -- echo --------------------------------------------------------------------------------------


def echo_command(
    ctx: typer.Context,
    node_spec: NodeArg,
    count: int = typer.Option(
        1, "--count", "-c", metavar="N", min=1, help="How many C-ECHOs, one association each."
    ),
    aet: Aet = None,
    timeout: Timeout = 30.0,
    as_json: JsonSummary = False,
) -> None:
    """Check that a node answers (C-ECHO) and print the round trip.

    Each C-ECHO opens an association, echoes and releases, so the time is what a real
    transfer's set-up costs. Exit 4 when the node is unreachable or rejects us.

    Example: pacsctl echo ORTHANC@127.0.0.1:4242 --count 3
    """
    from pacsctl.net import scu

    node, calling, _ = _setup(ctx, node_spec, aet)
    times: list[float] = []
    last_error: NetworkError | None = None
    for seq in range(1, count + 1):
        try:
            rtt = scu.echo(node, calling_aet=calling, timeout=timeout)
        except NetworkError as exc:
            last_error = exc
            if count == 1 and not as_json:
                raise
            if as_json:
                output.json_line(
                    {"type": "echo", "seq": seq, "node": str(node), "ok": False, "error": str(exc)}
                )
            else:
                output.error(str(exc))
            continue
        times.append(rtt)
        if as_json:
            output.json_line(
                {"type": "echo", "seq": seq, "node": str(node), "ok": True, "rtt_ms": round(rtt * 1000, 2)}
            )
        else:
            output.stdout.print(f"{node}: C-ECHO ok in {rtt * 1000:.1f} ms", highlight=False)
    failed = count - len(times)
    record: dict[str, Any] = {
        "type": "summary",
        "node": str(node),
        "sent": count,
        "ok": len(times),
        "failed": failed,
    }
    if times:
        record.update(
            min_ms=round(min(times) * 1000, 2),
            avg_ms=round(statistics.fmean(times) * 1000, 2),
            max_ms=round(max(times) * 1000, 2),
        )
    if count > 1 or as_json:
        text = f"{len(times)}/{count} ok"
        if times:
            text += f", round trip min/avg/max {record['min_ms']}/{record['avg_ms']}/{record['max_ms']} ms"
        output.summary(record, as_json, text)
    if failed:
        if last_error is not None and last_error.hint and not as_json:
            output.stderr.print(f"hint: {last_error.hint}", highlight=False)
        raise typer.Exit(EXIT_NETWORK)


# -- send --------------------------------------------------------------------------------------


def send_command(
    ctx: typer.Context,
    node_spec: NodeArg,
    paths: Optional[list[Path]] = typer.Argument(
        None,
        metavar="PATH",
        help="Files, folders (recursive), zip or DICOMDIR files; - reads paths or `ls --json` records "
        "from stdin.",
        show_default=False,
        # Kept as the strings given: typer would build a pydantic validator per path to make
        # each a Path (~0.2 ms apiece, 0.2 s of a 1000-file send's start-up).
        path_type=str,
    ),
    studies: Studies = [],
    keys: list[str] = typer.Option(
        [],
        "--key",
        "-k",
        metavar="KEY=VALUE",
        help="Send archived instances matching this (as `pacsctl ls`).",
    ),
    everything: bool = typer.Option(
        False, "--all", metavar="", help="Send every instance the archive holds."
    ),
    associations: int = typer.Option(
        2,
        "--associations",
        "-j",
        metavar="N",
        min=1,
        max=16,
        help="Associations in parallel (1 for peers that allow only one).",
    ),
    decompress: DecompressOpt = DecompressPolicy.LOSSLESS,
    aet: Aet = None,
    timeout: Timeout = 30.0,
    as_json: JsonSummary = False,
) -> None:
    """Send DICOM files, or instances from the archive, to a node (C-STORE).

    Each file goes in its stored transfer syntax when the node accepts it, else decompressed
    when --decompress allows (by default only lossless-compressed files: a lossy image fails
    rather than arrive looking like an original), over two associations at once (-j). Zip
    files are read as `import` reads them; non-DICOM files met in folders and zips are
    skipped. `-` reads one path per line, or the NDJSON records of `pacsctl ls --json` (each
    sent by its SOPInstanceUID, series or study UID from the archive, or its path). Exit 3
    when any file failed, 4 when the node cannot be reached.

    Example: pacsctl send PACS /data/study1 --json; pacsctl ls --json -k PatientID=123 | pacsctl send PACS -
    """
    import sys

    from pacsctl.dicom.matching import parse_key_values
    from pacsctl.remote import send as sending

    node, calling, _ = _setup(ctx, node_spec, aet)
    filters = parse_key_values(keys)
    if studies:
        if "StudyInstanceUID" in filters:
            raise UsageError("give the study either with --study or with -k StudyInstanceUID, not both")
        filters["StudyInstanceUID"] = "\\".join(studies)
    if everything and filters:
        raise UsageError("--all sends the whole archive: give it without --study or -k")
    given = [p for p in paths or [] if str(p) != "-"]
    from_stdin = len(given) != len(paths or [])
    if not given and not filters and not everything and not from_stdin:
        raise UsageError(
            "nothing to send", hint="give files or folders, -, --study UID, -k KEY=VALUE, or --all"
        )
    selection = sending.read_selection(sys.stdin) if from_stdin else sending.StdinSelection()
    with sending.spilled_inputs() as spill:
        items = sending.collect_files([*given, *selection.paths], spill) if given or selection.paths else []
        items += selection.problems
        if filters or everything or selection.needs_archive:
            with state(ctx).open_archive() as archive:
                if filters or everything:
                    items += sending.archive_files(archive, filters, everything=everything)
                items += sending.selection_files(archive, selection)
        if from_stdin and not items:
            raise UsageError("nothing to send: stdin named no file or record")
        with _failure_audited(
            ctx, AuditEvent.SEND, filters, node=str(node), calling_aet=calling, called_aet=node.aet
        ):
            summary = _send_items(ctx, node, calling, items, associations, timeout, as_json, decompress)
    _finish_send(ctx, node, calling, summary, filters, as_json)


def _send_items(
    ctx: typer.Context,
    node: Node,
    calling: str,
    items: list[SendItem],
    associations: int,
    timeout: float,
    as_json: bool,
    decompress: DecompressPolicy = DecompressPolicy.LOSSLESS,
) -> SendSummary:
    """Send `items` with a progress bar and one report per file that failed or was skipped."""
    from pacsctl.net import fastpath
    from pacsctl.net.sending import Decompress
    from pacsctl.remote import send as sending

    # This process only sends: its pynetdicom threads wait for events instead of polling
    # every millisecond (`fastpath.tuning`), as a serving node's do.
    fastpath.install(fastpath.enabled_by_default())

    verbose = state(ctx).verbosity > 0

    with output.progress(f"sending to {node.aet}", total=len(items), enabled=not as_json) as bar:

        def on_outcome(outcome: sending.SendOutcome) -> None:
            bar.advance(1, outcome.size if outcome.ok else 0)
            if outcome.ok or outcome.interrupted:  # the summary counts what a stop left unsent
                return
            status = "skipped" if outcome.skipped else "failed"
            if as_json:
                record: dict[str, Any] = {
                    "type": "file",
                    "status": status,
                    "path": outcome.path,
                    "reason": outcome.reason,
                }
                if outcome.sop_instance_uid:
                    record["SOPInstanceUID"] = outcome.sop_instance_uid
                if outcome.status is not None:
                    record["Status"] = f"0x{outcome.status:04X}"
                output.json_line(record)
            elif not outcome.skipped or verbose:
                output.warn(f"{status}: {outcome.path}: {outcome.reason}")

        with stop_on_signals() as cancel:
            summary = sending.send(
                node,
                items,
                calling,
                on_outcome=on_outcome,
                timeout=timeout,
                associations=associations,
                cancel=cancel,
                decompress=Decompress(decompress.value),
            )
    return summary


def _finish_send(
    ctx: typer.Context, node: Node, calling: str, summary: SendSummary, filters: dict[str, str], as_json: bool
) -> None:
    rate = summary.bytes / summary.elapsed / 1e6 if summary.elapsed else 0.0
    text = (
        f"sent {summary.sent} of {summary.files} files to {node}: {summary.failed} failed, "
        f"{summary.skipped} skipped"
    )
    if summary.interrupted:
        text += f", {summary.not_sent} not sent (interrupted)"
    text += f" ({summary.bytes / 1e6:.1f} MB in {summary.elapsed:.1f} s, {rate:.1f} MB/s)"
    output.summary({"type": "summary", "node": str(node), **summary.as_dict()}, as_json, text)
    record_action(
        resolve_archive_dir(state(ctx).archive),
        AuditEvent.SEND,
        summary.as_dict(),
        selection=filters,
        node=str(node),
        calling_aet=calling,
        called_aet=node.aet,
    )
    if summary.interrupted:
        raise OperationInterrupted(
            f"send interrupted: {summary.not_sent} file(s) not sent",
            hint="the same command again sends the rest (the node keeps what arrived)",
        )
    if summary.failed:
        raise typer.Exit(EXIT_INTEGRITY)


# -- query -------------------------------------------------------------------------------------


def query_command(
    ctx: typer.Context,
    node_spec: NodeArg,
    level: Level = LevelName.STUDY,
    keys: Keys = [],
    aet: Aet = None,
    timeout: Timeout = 30.0,
    sort: Sort = None,
    limit: Limit = None,
    columns: ColumnsOpt = None,
    wide: Wide = False,
    as_json: JsonRecords = False,
    as_csv: Csv = False,
) -> None:
    """Search a node (C-FIND) with the same filters and output as `pacsctl ls`.

    Names come back decoded with the answer's own character set (Latin-1, UTF-8, ...).
    Patient level uses Patient Root, the others Study Root. `-k Keyword` without a value asks
    for that attribute too and shows it (findscu's convention). At study level
    `-k Modality=CT` is asked as ModalitiesInStudy. `--limit N` stops the C-FIND after N
    matches (C-CANCEL); with --sort every match is fetched, sorted, then cut to N.

    Example: pacsctl query ORTHANC -k PatientName='DOE*' -k StudyDate=20240101- -k AccessionNumber --json
    """
    from dataclasses import replace

    from pacsctl.cli.listing import COLUMNS
    from pacsctl.dicom.matching import parse_query_keys
    from pacsctl.remote import find

    check_format(as_json, as_csv)
    view = list_view(sort, limit, columns, wide)
    query_level = level.query_level
    filters, extra = parse_query_keys(keys)
    filters, note = find.study_level_filters(query_level, filters)
    if note:
        output.note(note)
    node, calling, _ = _setup(ctx, node_spec, aet)
    # Without --sort the C-FIND stops after the matches shown (one more, to tell whether the
    # node holds more); with it every match is needed first, as for `ls`.
    early = limit is not None and not view.sort
    asked = limit + 1 if early and limit is not None else None
    records = list(
        find.query(node, query_level, filters, calling, timeout=timeout, extra_keys=extra, limit=asked)
    )
    if early and limit is not None:
        if len(records) > limit:
            del records[limit:]
            output.warn(f"showing the first {limit} matches the node answered; it holds more (--limit)")
        view = replace(view, limit=None)
    if extra and not view.columns:  # the keys asked for are shown, after the level's own
        shown = [*COLUMNS[query_level], *(k for k in extra if k not in COLUMNS[query_level])]
        view = replace(view, columns=tuple(shown))
        if as_json:  # JSON records keep every key, as without -k Keyword
            view = replace(view, columns=())
    emit_level(records, query_level, as_json, as_csv, view)


# -- move and get ------------------------------------------------------------------------------


def _selection(
    keys: list[str], level: LevelName, everything: bool, studies: Sequence[str] = ()
) -> tuple[str, dict[str, str]]:
    query_level, filters = _filters(keys, level)
    if studies:
        if "StudyInstanceUID" in filters:
            raise UsageError("give the study either with --study or with -k StudyInstanceUID, not both")
        filters["StudyInstanceUID"] = "\\".join(studies)
    if not filters and not everything:
        raise UsageError(
            "no selection: this would retrieve everything the node holds",
            hint="give -k KEY=VALUE (e.g. -k StudyInstanceUID=...), or --all if you mean it",
        )
    return query_level, filters


def _retrieve_text(
    verb: str, summary: RetrieveSummary, level: str, node: Node, dest: str | None = None
) -> str:
    """One line saying what a move or get did (`verb`: "move", "get")."""
    what = f"{summary.matched} {level.lower()}(s)" + (f" to {dest}" if dest else "")
    if summary.refused:
        status = f"status 0x{summary.status:04X}" if summary.status is not None else "no status"
        return f"{node.aet} refused to {verb} {what}: nothing was sent ({status})"
    done = {"move": "moved", "get": "got"}[verb]
    head = f"interrupted: {done} part of {what}" if summary.interrupted else f"{done} {what}"
    text = (
        f"{head}: peer reports {summary.completed} completed, "
        f"{summary.failed} failed, {summary.warning} warning"
    )
    if summary.remaining:
        text += f", {summary.remaining} remaining"
    if summary.status not in (None, 0):
        text += f", final status 0x{summary.status:04X}"
    if summary.counted_in_archive:
        text += (
            f"; in the archive now: {summary.stored} new, {summary.already_archived} held before the "
            f"move (`pacsctl serve` received: re-sent copies cannot be told apart)"
        )
    elif summary.counted_locally:
        text += (
            f"; arrived {summary.received}, stored {summary.stored} new, {summary.duplicates} already "
            f"archived, {summary.store_failed} refused"
        )
        if summary.conflicts:
            text += f", {summary.conflicts} differing from the archived copy (quarantined)"
    if summary.counted_locally and summary.expected is not None:
        text += f", {len(summary.missing)} of {summary.expected} expected missing"
    return text + f" ({summary.elapsed:.1f} s)"


def _finish(summary: RetrieveSummary, as_json: bool, text: str, node: Node, dest: str) -> None:
    """Print the summary; exit 130 when interrupted, 4 when the peer refused outright (1 when
    our own node refused the peer's stores), 3 when anything is short."""
    from pacsctl.remote import retrieve

    output.summary({"type": "summary", **summary.as_dict()}, as_json, text)
    if summary.interrupted:
        raise OperationInterrupted(
            "retrieve interrupted",
            hint="the same command again retrieves the rest (what arrived counts as duplicates)",
        )
    for reject in summary.refused_by_us[:3]:
        output.warn(
            f"we refused an association from {reject.get('calling_aet', '?')} at {reject.get('peer', '?')} "
            f"during the move: {reject.get('reason', 'rejected')}"
        )
    if summary.refused and summary.refused_by_us:  # the peer could not store to us: our doing
        raise PacsctlError(
            f"our node refused {len(summary.refused_by_us)} association(s) of {node.aet} during the "
            f"move ({summary.refused_by_us[0].get('reason', 'rejected')}), so {node.aet} gave up",
            hint=_OUR_REJECTS_HINT,
        )
    refusal = retrieve.refusal_error(summary, node, dest)
    if refusal is not None:
        raise refusal
    if summary.matched == 0:
        output.warn("nothing matched the selection")
    if not summary.ok:
        if summary.missing:
            output.warn(
                f"{len(summary.missing)} instance(s) the peer lists never arrived, e.g. {summary.missing[0]}"
            )
            if summary.refused_by_us:
                output.warn(
                    f"our node refused {len(summary.refused_by_us)} association(s) of {node.aet} during the "
                    f"move: {_OUR_REJECTS_HINT}"
                )
            elif summary.received == 0:
                output.warn(
                    f"nothing arrived: does {node.aet} reach us at our host and port, and store with "
                    f"the calling AE title {node.aet}? (others: `pacsctl config set allow`)"
                )
        raise typer.Exit(EXIT_INTEGRITY)


_OUR_REJECTS_HINT = (
    "`pacsctl config set allow` must list the AE title it stores with; a running `pacsctl serve` "
    "needs `kill -HUP` (or a restart) to see a changed list"
)


def _check_our_allow_list(config: Config, node: Node, dest: str) -> None:
    """A running `pacsctl serve` takes C-STOREs only from its allow-list: a source that is not
    on it would have every instance refused. Say so before anything is moved."""
    if config.allow and node.aet not in config.allow:
        raise PacsctlError(
            f"our allow-list does not list {node.aet}: the running `pacsctl serve` would refuse "
            f"every instance {node.aet} sends to {dest}",
            hint=f"`pacsctl config set allow {','.join([*config.allow, node.aet])}`, then `kill -HUP` the "
            f"serve (or restart it), and move again",
        )


def move_command(
    ctx: typer.Context,
    node_spec: NodeArg,
    to: str = typer.Option(
        ...,
        "--to",
        metavar="NODE",  # completes node names; an AE title is taken as well
        help="Destination: a node name (`pacsctl nodes list`) or an AE title; the peer must know it.",
    ),
    level: RetrieveLevel = LevelName.STUDY,
    studies: Studies = [],
    keys: Keys = [],
    everything: All = False,
    settle: float = typer.Option(
        10.0,
        "--settle",
        metavar="SECONDS",
        min=0.0,
        help="Into our archive: seconds to wait for late arrivals after the peer's final answer.",
    ),
    aet: Aet = None,
    timeout: Timeout = 30.0,
    as_json: JsonSummary = False,
) -> None:
    """Have a node send studies to a destination AE (C-MOVE).

    Filters other than unique keys are resolved with a C-FIND first, then one C-MOVE per match.
    When the destination is our own AE title, pacsctl receives into the archive (listening on
    the configured port unless `pacsctl serve` already does) and checks that every instance the
    node lists arrived, whatever the node's final status says. Exit 3 when anything is missing
    or failed, 4 when the node refuses outright (e.g. it does not know the destination).

    Example: pacsctl move OLDPACS --to PACSCTL --study 1.2.840.113619.2.1
    """
    from pacsctl.remote import receiver as receiver_mod
    from pacsctl.remote import retrieve

    query_level, filters = _selection(keys, level, everything, studies)
    node, calling, config = _setup(ctx, node_spec, aet)
    dest = config.nodes[to].aet if to in config.nodes else validate_ae_title(to)
    with _failure_audited(
        ctx,
        AuditEvent.RETRIEVE,
        filters,
        service="move",
        node=str(node),
        destination=dest,
        calling_aet=calling,
        called_aet=node.aet,
    ):
        with output.progress(f"moving from {node.aet}", total=None, enabled=not as_json) as bar:

            def on_progress(_: RetrieveSummary) -> None:
                bar.advance(1)

            with stop_on_signals() as cancel:
                if dest in (config.ae_title, calling):
                    with (
                        state(ctx).open_archive(create=True) as archive,
                        receiver_mod.receiving(archive, dest, node.aet, cancel) as (receiver, listening),
                    ):
                        if not listening:
                            _check_our_allow_list(archive.config, node, dest)
                            output.warn(
                                f"cannot listen on port {archive.config.port} (in use?): assuming a running "
                                f"`pacsctl serve` receives for {dest}; arrivals are counted in the archive"
                            )
                        began = datetime.now(UTC)
                        summary = retrieve.move(
                            node,
                            dest,
                            query_level,
                            filters,
                            calling,
                            receiver=receiver,
                            on_progress=on_progress,
                            settle=settle,
                            timeout=timeout,
                            listening=listening,
                            cancel=cancel,
                        )
                        summary.refused_by_us = (
                            receiver_mod.rejects_of(receiver.rejects, node)
                            if listening
                            else receiver_mod.rejects_in_audit_log(archive, began, node)
                        )
                else:
                    summary = retrieve.move(
                        node,
                        dest,
                        query_level,
                        filters,
                        calling,
                        on_progress=on_progress,
                        timeout=timeout,
                        cancel=cancel,
                    )
    record_action(
        resolve_archive_dir(state(ctx).archive),
        AuditEvent.RETRIEVE,
        summary.as_dict(),
        selection=filters,
        service="move",
        node=str(node),
        destination=dest,
        calling_aet=calling,
        called_aet=node.aet,
    )
    _finish(summary, as_json, _retrieve_text("move", summary, query_level, node, dest), node, dest)


def get_command(
    ctx: typer.Context,
    node_spec: NodeArg,
    level: RetrieveLevel = LevelName.STUDY,
    studies: Studies = [],
    keys: Keys = [],
    everything: All = False,
    aet: Aet = None,
    timeout: Timeout = 30.0,
    as_json: JsonSummary = False,
) -> None:
    """Retrieve studies from a node straight into the archive (C-GET).

    The selection's instances are listed first (C-FIND), so compressed ones can be offered
    their own syntax and arrive as the node holds them, and so every one of them is checked in
    the archive afterwards. Counts what actually arrived and was stored next to the node's own
    counts; exit 3 when they disagree, anything is missing or failed.

    Example: pacsctl get ORTHANC -k StudyInstanceUID=1.2.840.113619.2.1 --json
    """
    from pacsctl.remote import receiver as receiver_mod
    from pacsctl.remote import retrieve

    query_level, filters = _selection(keys, level, everything, studies)
    node, calling, _ = _setup(ctx, node_spec, aet)
    with _failure_audited(
        ctx,
        AuditEvent.RETRIEVE,
        filters,
        service="get",
        node=str(node),
        calling_aet=calling,
        called_aet=node.aet,
    ):
        with output.progress(f"getting from {node.aet}", total=None, enabled=not as_json) as bar:

            def on_progress(_: RetrieveSummary) -> None:
                bar.advance(1)

            with state(ctx).open_archive(create=True) as archive, stop_on_signals() as cancel:
                receiver = receiver_mod.ArchiveReceiver(archive)
                try:
                    summary = retrieve.get(
                        node,
                        receiver,
                        query_level,
                        filters,
                        calling,
                        on_progress=on_progress,
                        timeout=timeout,
                        cancel=cancel,
                    )
                finally:
                    receiver.close()
    record_action(
        archive.root,
        AuditEvent.RETRIEVE,
        summary.as_dict(),
        selection=filters,
        service="get",
        node=str(node),
        calling_aet=calling,
        called_aet=node.aet,
    )
    _finish(summary, as_json, _retrieve_text("get", summary, query_level, node), node, node.aet)
