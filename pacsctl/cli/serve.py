"""`pacsctl serve`: run the archive as a DICOM node until SIGTERM / Ctrl-C."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.config import validate_ae_title, validate_port
from pacsctl.errors import UsageError

if TYPE_CHECKING:
    from pacsctl.node.sidecar import SidecarSpec


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
    web_port: Optional[int] = typer.Option(
        None, "--web-port", metavar="PORT", help="Also serve DICOMweb (/dicom-web) and the viewer page here."
    ),
    web_host: Optional[str] = typer.Option(
        None, "--web-host", metavar="ADDRESS", help="Address of the web side (default: the node's --host)."
    ),
    web_tls_cert: Optional[Path] = typer.Option(
        None,
        "--web-tls-cert",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="Serve HTTPS with this certificate (PEM).",
    ),
    web_tls_key: Optional[Path] = typer.Option(
        None,
        "--web-tls-key",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        help="Private key of --web-tls-cert (PEM).",
    ),
    web_cors: Optional[list[str]] = typer.Option(
        None,
        "--web-cors",
        metavar="ORIGIN",
        help="Allow a viewer served from ORIGIN (repeatable), e.g. https://ohif.example.",
    ),
    web_max_body: str = typer.Option(
        "4G", "--web-max-body", metavar="SIZE", help="Largest STOW-RS request body, e.g. 500M, 4G."
    ),
) -> None:
    """Run a DICOM node over the archive: Verification, Storage, and Query/Retrieve
    (Patient and Study Root FIND, MOVE, GET).

    Every received instance is durable and indexed before it is acknowledged; unreadable ones go
    to quarantine. C-MOVE destinations are the nodes known to `pacsctl nodes`, by AE title.
    Every association, store, find, move and get is written to the audit log (`pacsctl audit`).
    Instances matching a route (`pacsctl route`) are queued as they are stored and forwarded by
    a forwarder process that runs with the node. SIGTERM or Ctrl-C stops accepting, lets
    transfers in flight finish, and exits 0 (a second one aborts them). SIGHUP reloads the
    allow-list, time-outs, on_conflict, nodes and routes from the config
    (`kill -HUP $(cat ARCHIVE/serve.pid)`); settings given here stay as given.

    With --web-port, DICOMweb (QIDO-RS, WADO-RS, STOW-RS at /dicom-web) and a viewer page at /
    are served from the same archive by a process of their own; every request needs a token
    (`pacsctl token create`).

    Example: pacsctl serve --aet MYPACS --port 11112 --allow CT01 --allow WORKSTATION --web-port 8080
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
    web = _web_sidecar(
        root=archive.root,
        port=web_port,
        host=web_host or options.host,
        tls=(web_tls_cert, web_tls_key),
        cors=tuple(web_cors or ()),
        max_body=web_max_body,
    )
    web_bound_port = int(web.sockets[0].getsockname()[1]) if web is not None else 0
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
        if web is not None:
            scheme = "https" if web_tls_cert else "http"
            output.stderr.print(
                f"DICOMweb on {scheme}://{web_host or options.host}:{web_bound_port}/dicom-web, "
                "the viewer page at /",
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
    from pacsctl.routing.process import start_forwarder, stop_forwarder

    # The routes' forwarder, its own process (never competing with the stores for a GIL);
    # started before run_node blocks the stop signals, which a child would inherit.
    forwarder = start_forwarder(root)
    try:
        code = run_node(root, options, workers=workers, ready=ready, fixed=fixed, sidecar=web)
    finally:
        stop_forwarder(forwarder)
    output.stderr.print("stopped", highlight=False)
    raise typer.Exit(code)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`500M`, `4G`, `1048576` -> bytes; UsageError otherwise."""
    value = text.strip().upper().removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and value[-1:] else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit() or int(number) <= 0:
        raise UsageError(f"cannot read {text!r} as a size", hint="e.g. 500M, 4G or a number of bytes")
    return int(number) * _SIZE_UNITS[unit]


def _web_sidecar(
    root: Path,
    port: int | None,
    host: str,
    tls: tuple[Path | None, Path | None],
    cors: tuple[str, ...],
    max_body: str,
) -> SidecarSpec | None:
    """The DICOMweb server to run beside the node (its socket bound now: a port in use is one
    clear error before anything starts), or None without --web-port."""
    if port is None:
        return None
    if port != 0:
        validate_port(port)
    cert, key = tls
    if bool(cert) != bool(key):
        raise UsageError("--web-tls-cert and --web-tls-key go together")
    from pacsctl.node.sidecar import SidecarSpec
    from pacsctl.web.app import WebOptions
    from pacsctl.web.server import bind_web_socket, run_web

    options = WebOptions(
        host=host,
        port=port,
        cors=cors,
        max_body=parse_size(max_body),
        tls_cert=str(cert) if cert else None,
        tls_key=str(key) if key else None,
    )
    try:
        sock = bind_web_socket(options)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {host}:{port} for the web side: {exc.strerror or exc}",
            hint="choose another --web-port, or stop what uses it",
        ) from None
    return SidecarSpec(
        "web server", lambda should_stop, alive: run_web(root, options, sock, should_stop, alive), (sock,)
    )
