"""`pacsctl quarantine`: what could not be stored, and why."""

from __future__ import annotations

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import JsonRecords


def register(app: typer.Typer) -> None:
    """Add the `quarantine` command."""
    app.command("quarantine")(quarantine_command)


def quarantine_command(
    ctx: typer.Context,
    as_json: JsonRecords = False,
) -> None:
    """List quarantined input with its reason, origin and SOP Instance UID, oldest first.

    Quarantined files stay in the archive's quarantine/ folder until you delete them: fix the
    input (or use `import --on-conflict replace`) and import it again.

    Example: pacsctl quarantine --json
    """
    archive = state(ctx).open_archive()
    output.emit(
        archive.quarantined(),
        ["time", "reason", "origin", "SOPInstanceUID", "path"],
        "json" if as_json else "table",
    )
