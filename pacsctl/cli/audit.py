"""`pacsctl audit`: read the archive's audit trail."""

from __future__ import annotations

from typing import Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.listing import Wide
from pacsctl.cli.options import Event, JsonRecords
from pacsctl.errors import UsageError

_COLUMNS = ["time", "event", "calling_aet", "called_aet", "peer", "status", "detail"]


def register(app: typer.Typer) -> None:
    """Add the `audit` command."""
    app.command("audit")(audit_command)


def audit_command(
    ctx: typer.Context,
    since: Optional[str] = typer.Option(
        None,
        "--since",
        metavar="TIME",
        help="Only records from this time on: ISO time (UTC unless zoned) or an age such as 30m, 12h, 7d.",
    ),
    event: Event = None,
    calling: Optional[str] = typer.Option(
        None, "--calling", metavar="AET", help="Only records of this calling AE title."
    ),
    uid: Optional[str] = typer.Option(
        None, "--uid", metavar="UID", help="Only records naming this UID (study, series, instance)."
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=0, metavar="N", help="At most the first N matching records."
    ),
    tail: Optional[int] = typer.Option(
        None, "--tail", min=0, metavar="N", help="Only the last N matching records."
    ),
    wide: Wide = False,
    as_json: JsonRecords = False,
) -> None:
    """Show who associated, stored, queried and retrieved what: the audit trail `pacsctl serve`
    writes (time, event, calling and called AE title, peer address, UIDs, status), and what
    `import`, `send`, `move`/`get`, `backup` and `verify --repair-from` did (OS user, command,
    counts). It never holds patient names or IDs.

    Example: pacsctl audit --since 24h --event store --calling CT01 --tail 20
    """
    from pacsctl.archive.archive import AUDIT_LOG
    from pacsctl.archive.audit import AuditQuery, parse_since, select_records

    if limit is not None and tail is not None:
        raise UsageError(
            "--limit and --tail exclude each other", hint="--limit N: the first N; --tail N: the last N"
        )
    query = AuditQuery(
        since=parse_since(since) if since else None,
        event=event,
        calling_aet=calling.strip() if calling else None,
        uid=uid.strip() if uid else None,
    )
    archive = state(ctx).open_archive(create=False)
    records = select_records(archive.root / AUDIT_LOG, query, limit=limit, tail=tail)
    if as_json:
        for record in records:
            output.json_line(record)
        return
    rows = []
    for r in records:
        detail = {k: v for k, v in r.items() if k not in _COLUMNS}
        rows.append(
            {
                **{k: r.get(k, "") for k in _COLUMNS[:-1]},
                "time": _table_time(r.get("time")),
                "detail": " ".join(f"{k}={v}" for k, v in detail.items()),
            }
        )
    output.emit(rows, _COLUMNS, fmt="table", wide=wide, droppable=("peer", "called_aet"))


def _table_time(value: object) -> str:
    """`2024-05-01T08:00:01.123+00:00` as `2024-05-01 08:00:01` (records are written in UTC)."""
    text = str(value or "")
    return text[:19].replace("T", " ") if text.endswith("+00:00") else text
