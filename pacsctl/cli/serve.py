"""`pacsctl serve`: run the archive as a DICOM node until SIGTERM / Ctrl-C."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.config import validate_ae_title, validate_port
from pacsctl.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add the `serve` command."""
    app.command("serve")(serve_command)


def serve_command(
    ctx: typer.Context,
    aet: Optional[str] = typer.Option(
        None, "--aet", metavar="AET", help="Our AE title (default: config ae_title, PACSCTL)."
    ),
    host: Optional[str] = typer.Option(
        None, "--host", metavar="ADDRESS", help="Address to listen on (default: config host, all interfaces)."
    ),
    port: Optional[int] = typer.Option(
        None,
        "--port",
        "-p",
        metavar="PORT",
        help="TCP port (default: config port, 11112; 0 = any free port).",
    ),
    allow: Optional[list[str]] = typer.Option(
        None,
        "--allow",
        metavar="AET",
        help="Calling AE title allowed to connect (repeatable; default: config allow, else anyone).",
    ),
    max_associations: Optional[int] = typer.Option(
        None,
        "--max-associations",
        metavar="N",
        min=1,
        help="Associations served at once (default: config, 32).",
    ),
    acse_timeout: Optional[float] = typer.Option(
        None,
        "--acse-timeout",
        metavar="SECONDS",
        min=0.1,
        help="Seconds a client has from connecting to associated, and to release (default: config, 30).",
    ),
    dimse_timeout: Optional[float] = typer.Option(
        None,
        "--dimse-timeout",
        metavar="SECONDS",
        min=0.1,
        help="Seconds to wait for a DIMSE message (default: config, 60).",
    ),
    network_timeout: Optional[float] = typer.Option(
        None,
        "--network-timeout",
        metavar="SECONDS",
        min=0.1,
        help=(
            "Seconds an idle association is kept open, and the longest one PDU may take to arrive "
            "(default: config, 60)."
        ),
    ),
    tls_cert: Optional[Path] = typer.Option(
        None,
        "--tls-cert",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="Serve DICOM over TLS with this certificate (PEM).",
    ),
    tls_key: Optional[Path] = typer.Option(
        None,
        "--tls-key",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="Private key of --tls-cert (PEM).",
    ),
    tls_ca: Optional[Path] = typer.Option(
        None,
        "--tls-ca",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="Require client certificates signed by this CA (PEM).",
    ),
    workers: int = typer.Option(
        min(4, os.cpu_count() or 1),
        "--workers",
        "-w",
        metavar="N",
        min=1,
        help="Processes sharing the port (default: one per core, at most 4).",
    ),
) -> None:
    """Run a DICOM node over the archive: Verification, Storage, and Query/Retrieve
    (Patient and Study Root FIND, MOVE, GET).

    Every received instance is durable and indexed before it is acknowledged; unreadable ones go
    to quarantine. C-MOVE destinations are the nodes known to `pacsctl nodes`, by AE title.
    Every association, store, find, move and get is written to the audit log (`pacsctl audit`).
    SIGTERM or Ctrl-C stops accepting, lets transfers in flight finish, and exits 0 (a second
    one aborts them). SIGHUP reloads the allow-list, time-outs, on_conflict and nodes from the
    config (`kill -HUP $(cat ARCHIVE/serve.pid)`); settings given here stay as given.

    Example: pacsctl serve --aet MYPACS --port 11112 --allow CT01 --allow WORKSTATION
    """
    from pacsctl.net.types import TlsOptions
    from pacsctl.node.service import options_from_config, require_servable
    from pacsctl.node.supervisor import run_node

    archive = state(ctx).open_archive(create=True)
    require_servable(archive)  # a read-only archive: one clear error, not failing workers
    if aet is not None:
        validate_ae_title(aet)
    if port is not None and port != 0:
        validate_port(port)
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if tls_ca and not tls_cert:
        raise UsageError("--tls-ca needs --tls-cert and --tls-key")
    tls = TlsOptions(str(tls_cert), str(tls_key), str(tls_ca) if tls_ca else None) if tls_cert else None
    options = options_from_config(
        archive,
        ae_title=aet,
        host=host,
        port=port,
        allow=list(allow) if allow else None,
        max_associations=max_associations,
        acse_timeout=acse_timeout,
        dimse_timeout=dimse_timeout,
        network_timeout=network_timeout,
        tls=tls,
    )
    root = archive.root
    archive.close()  # each serving process opens its own
    if not options.allow:
        output.warn(
            "no allow-list: any calling AE title may store, query and retrieve "
            "(set one with --allow AET or `pacsctl config set allow AET`)"
        )

    def ready(bound_port: int) -> None:
        mode = "TLS" if tls else "plain TCP"
        output.stderr.print(
            f"serving {root} as {options.ae_title} on {options.host}:{bound_port} ({mode}, "
            f"{workers} worker{'s' if workers > 1 else ''}); Ctrl-C or SIGTERM to stop",
            highlight=False,
        )

    given = {
        "ae_title": aet,
        "host": host,
        "port": port,
        "allow": allow,
        "max_associations": max_associations,
        "acse_timeout": acse_timeout,
        "dimse_timeout": dimse_timeout,
        "network_timeout": network_timeout,
    }
    fixed = frozenset(k for k, v in given.items() if v is not None)  # SIGHUP keeps these
    code = run_node(root, options, workers=workers, ready=ready, fixed=fixed)
    output.stderr.print("stopped", highlight=False)
    raise typer.Exit(code)
