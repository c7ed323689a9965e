"""`pacsctl audit`: read the archive's audit trail."""

from __future__ import annotations

from typing import Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import Event, JsonRecords

_COLUMNS = ["time", "event", "calling_aet", "called_aet", "peer", "status", "detail"]


def register(app: typer.Typer) -> None:
    """Add the `audit` command."""
    app.command("audit")(audit_command)


def audit_command(
    ctx: typer.Context,
    since: Optional[str] = typer.Option(None, "--since", metavar="TIME", help="Only records from this time on: ISO time (UTC unless zoned) or an age such as 30m, 12h, 7d."),
    event: Event = None,
    as_json: JsonRecords = False,
) -> None:
    """Show who associated, stored, queried and retrieved what: the audit trail `pacsctl serve`
    writes (time, event, calling and called AE title, peer address, UIDs, status). It never
    holds patient names or IDs.

    Example: pacsctl audit --since 24h --event store --json
    """
    from pacsctl.archive.archive import AUDIT_LOG
    from pacsctl.archive.audit import parse_since, read_audit

    archive = state(ctx).open_archive(create=False)
    when = parse_since(since) if since else None
    records = (r for r in read_audit(archive.root / AUDIT_LOG, when)
               if event is None or r.get("event") == event)
    if as_json:
        for record in records:
            output.json_line(record)
        return
    rows = []
    for r in records:
        status = r.get("status")
        detail = {k: v for k, v in r.items() if k not in _COLUMNS}
        rows.append({
            **{k: r.get(k, "") for k in _COLUMNS[:-2]},
            "status": f"0x{status:04X}" if isinstance(status, int) else (status or ""),
            "detail": " ".join(f"{k}={v}" for k, v in detail.items()),
        })
    output.emit(rows, _COLUMNS, fmt="table", title="audit")
