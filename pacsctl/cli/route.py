"""`pacsctl route`: forward newly stored instances to other nodes, DICOMweb servers, buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import NO_METAVAR, JsonRecords, JsonSummary, Keys
from pacsctl.errors import EXIT_INTEGRITY, EXIT_NETWORK

route_app = typer.Typer(
    help="Forwarding on arrival: every newly stored instance that matches a route goes to its "
    "destination, from a durable outbox in the archive.\n\n"
    "Example: pacsctl route add offsite --to CLOUD@10.0.0.9:104 -k Modality=CT; pacsctl route status",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `route` command group."""
    app.add_typer(route_app, name="route")


@route_app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Name of the route, e.g. offsite."),
    to: str = typer.Option(
        ...,
        "--to",
        metavar="DEST",
        help="A node (name or AET@host:port), s3://BUCKET/PREFIX, or a DICOMweb URL https://.../dicom-web.",
    ),
    keys: Keys = [],
    delay: float = typer.Option(
        0.0, "--delay", metavar="SECONDS", min=0, help="Forward a series once it has been quiet this long."
    ),
    max_attempts: int = typer.Option(
        10, "--max-attempts", metavar="N", min=1, help="Refusals of an instance before it is a dead letter."
    ),
    max_backoff: float = typer.Option(
        60.0,
        "--max-backoff",
        metavar="SECONDS",
        min=0.1,
        help="Longest wait between tries while the destination is down or refusing.",
    ),
    replace: bool = typer.Option(False, "--replace", metavar=NO_METAVAR, help="Change an existing route."),
    anonymize: bool = typer.Option(
        False,
        "--anonymize",
        metavar=NO_METAVAR,
        help="De-identify on the way out (as `pacsctl anonymize`, Basic Profile); needs --key or --key-file.",
    ),
    key: str = typer.Option(
        "",
        "--key",
        metavar="SECRET",
        help="Secret for the keyed UIDs and pseudonyms (kept in the archive's private config). "
        "Prefer --key-file: a command line is visible to other users.",
    ),
    key_file: Optional[Path] = typer.Option(
        None, "--key-file", metavar="FILE", help="Read the --anonymize secret from FILE at each start."
    ),
    token_file: Optional[Path] = typer.Option(
        None,
        "--token-file",
        metavar="FILE",
        help="DICOMweb: send `Authorization: Bearer` with FILE's first line (read at every request).",
    ),
    user: str = typer.Option(
        "", "--user", metavar="NAME", help="DICOMweb: HTTP basic as NAME (with --password-file)."
    ),
    password_file: Optional[Path] = typer.Option(
        None,
        "--password-file",
        metavar="FILE",
        help="DICOMweb: the --user's password, FILE's first line (read at every request).",
    ),
) -> None:
    """Add a route: from now on, every instance stored (received by `serve`, or imported) that
    matches the -k filters is queued in the archive and forwarded to DEST.

    Delivered means confirmed: C-STORE Success, the instance named in the STOW-RS response, the
    bucket's PUT done. A destination that is down holds its queue and is tried again with back-off;
    an instance refused --max-attempts times becomes a dead letter (`route status`, `route retry`).

    A DICOMweb destination that wants credentials gets them from a file, read at every request
    (rotate it in place): --token-file (bearer) or --user with --password-file (basic). The
    config keeps only the file's path; a refused or unreadable secret holds the queue.

    Example: pacsctl route add cloud --to https://pacs.example/dicom-web --token-file ~/.token -k Modality=CT
    """
    from pacsctl.dicom.matching import parse_key_values
    from pacsctl.routing.routes import add_route

    archive = state(ctx).open_archive(create=True)
    route = add_route(
        archive,
        name,
        to,
        parse_key_values(keys),
        delay,
        max_attempts,
        max_backoff,
        replace=replace,
        anonymize=anonymize,
        key=key,
        key_file=key_file or "",
        token_file=token_file or "",
        user=user,
        password_file=password_file or "",
    )
    for secret_file in (token_file, password_file):
        if secret_file is not None and secret_file.stat().st_mode & 0o077:
            output.warn(f"{secret_file} can be read by other users (chmod 600 it)")
    output.stderr.print(f"added route {route.name} -> {route.to}", highlight=False)


@route_app.command("list")
def list_routes(ctx: typer.Context, as_json: JsonRecords = False) -> None:
    """List the routes and their settings.

    Example: pacsctl route list --json
    """
    from pacsctl.routing.routes import list_routes as routes

    rows = routes(state(ctx).open_archive())
    if not as_json:
        for row in rows:  # the filters' keywords only: a value may hold a patient's name
            row["match"] = ", ".join(sorted(row["match"])) or "(everything)"
            row["anonymize"] = "yes" if row["anonymize"] else "no"
    output.emit(
        rows,
        ["name", "to", "match", "delay", "max_attempts", "anonymize", "auth"],
        "json" if as_json else "table",
    )


@route_app.command("remove")
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The route's name (from `pacsctl route list`)."),
    force: bool = typer.Option(
        False, "--force", metavar=NO_METAVAR, help="Remove it even with instances not yet delivered."
    ),
) -> None:
    """Remove a route and its outbox.

    Example: pacsctl route remove offsite
    """
    from pacsctl.routing.routes import remove_route

    dropped = remove_route(state(ctx).open_archive(), name, force=force)
    extra = f" ({dropped} undelivered instance(s) dropped)" if dropped else ""
    output.stderr.print(f"removed route {name}{extra}", highlight=False)


@route_app.command("status")
def status(
    ctx: typer.Context,
    name: Optional[str] = typer.Argument(None, metavar="[NAME]", help="Only this route."),
    as_json: JsonRecords = False,
) -> None:
    """Show each route's outbox: pending, delivered, failing, dead letters, and whether its
    destination is down; then the dead letters (SOP Instance UIDs and the last reason).

    Exit 0; 3 when there are dead letters.

    Example: pacsctl route status --json
    """
    from pacsctl.routing.routes import route_status

    rows, dead = route_status(state(ctx).open_archive(), name)
    if as_json:
        for record in rows + dead:
            output.json_line(record)
    else:
        output.emit(rows, ["name", "to", "pending", "delivered", "failing", "dead", "down"], "table")
        if dead:
            output.stderr.print(
                "dead letters (`pacsctl route retry NAME` queues them again):", highlight=False
            )
            output.emit(dead, ["route", "SOPInstanceUID", "attempts", "reason"], "table")
    if dead:
        raise typer.Exit(EXIT_INTEGRITY)


@route_app.command("retry")
def retry(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The route whose dead letters to queue again."),
) -> None:
    """Queue a route's dead letters again (their attempts start over).

    Example: pacsctl route retry offsite
    """
    from pacsctl.routing.routes import retry_route

    count = retry_route(state(ctx).open_archive(), name)
    output.stderr.print(f"queued {count} dead letter(s) of {name} again", highlight=False)


@route_app.command("run")
def run(
    ctx: typer.Context,
    names: Optional[list[str]] = typer.Argument(None, metavar="[NAME]...", help="Only these routes."),
    once: bool = typer.Option(
        False, "--once", metavar=NO_METAVAR, help="Deliver what is due now, then exit (for cron)."
    ),
    as_json: JsonSummary = False,
) -> None:
    """Deliver the routes' outboxes without `serve` (which runs a forwarder of its own): what
    `import` queued, or what a stopped node left. Without --once, runs until Ctrl-C/SIGTERM.

    Exit 0; 3 when something is left undelivered (refused, dead letters); 4 when a
    destination could not be reached.

    Example: pacsctl import /media/cdrom && pacsctl route run --once
    """
    from pacsctl.routing.forwarder import run_once

    archive = state(ctx).open_archive()
    root = archive.root
    archive.close()
    if not once:
        _run_until_stopped(root)
        return
    reports = run_once(root, names or None)
    totals = {"delivered": 0, "refused": 0, "dead": 0, "pending": 0}
    for report in reports:
        for key in totals:
            totals[key] += getattr(report, key)
        if as_json:
            output.json_line(report.as_dict())
        elif report.down:
            output.warn(f"route {report.route}: destination not reached: {report.down}")
        elif report.busy:
            output.warn(f"route {report.route}: the running `pacsctl serve` is delivering it")
    down = [r for r in reports if r.down]
    text = (
        f"delivered {totals['delivered']}, refused {totals['refused']} (dead letters {totals['dead']}), "
        f"left {totals['pending']} on {len(reports)} route(s)"
    )
    output.summary({"type": "summary", "routes": len(reports), **totals}, as_json, text)
    if down:
        raise typer.Exit(EXIT_NETWORK)
    if totals["pending"] and not all(r.busy for r in reports if r.pending):
        raise typer.Exit(EXIT_INTEGRITY)


def _run_until_stopped(root) -> None:  # noqa: ANN001 - a Path
    import signal
    import threading

    from pacsctl.routing.forwarder import Forwarder

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    output.stderr.print(f"forwarding the routes of {root}; Ctrl-C or SIGTERM to stop", highlight=False)
    try:
        Forwarder(root).run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    output.stderr.print("stopped", highlight=False)
