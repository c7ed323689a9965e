"""`pacsctl nodes`: the remote DICOM nodes this archive knows by name."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import NO_METAVAR, JsonRecords
from pacsctl.config import Node, validate_ae_title, validate_port
from pacsctl.errors import UsageError

nodes_app = typer.Typer(
    help="Known remote DICOM nodes (used by name, or inline as AET@host:port).\n\n"
    "Example: pacsctl nodes add old-pacs --aet OLDPACS --host 10.0.0.5 --port 104; pacsctl nodes list",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `nodes` command group."""
    app.add_typer(nodes_app, name="nodes")


@nodes_app.command("add")
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Name to use in commands, e.g. old-pacs."),
    aet: str = typer.Option(..., "--aet", metavar="AET", help="The node's AE title."),
    host: str = typer.Option(..., "--host", metavar="HOST", help="Host name or IP address."),
    port: int = typer.Option(..., "--port", metavar="PORT", help="DICOM port."),
    tls: bool = typer.Option(False, "--tls", metavar=NO_METAVAR, help="Talk to it over TLS."),
    tls_cert: Optional[str] = typer.Option(
        None, "--tls-cert", metavar="FILE", help="Our client certificate (PEM) for it."
    ),
    tls_key: Optional[str] = typer.Option(
        None, "--tls-key", metavar="FILE", help="Our client key (PEM) for it."
    ),
    tls_ca: Optional[str] = typer.Option(
        None, "--tls-ca", metavar="FILE", help="CA bundle that signs its certificate."
    ),
    tls_no_hostname_check: bool = typer.Option(
        False,
        "--tls-no-hostname-check",
        metavar=NO_METAVAR,
        help="Accept its certificate whatever host name it names (lab set-ups only).",
    ),
    replace: bool = typer.Option(
        False, "--replace", metavar=NO_METAVAR, help="Overwrite an existing node of that name."
    ),
) -> None:
    """Add a remote node.

    Over TLS its certificate must be issued for HOST (name or IP address) and signed by
    --tls-ca (else a CA of the system store); --tls-no-hostname-check drops the name check.

    Example: pacsctl nodes add old-pacs --aet OLDPACS --host 10.0.0.5 --port 104
    """
    if "@" in name or ":" in name:
        raise UsageError(f"invalid node name {name!r}", hint="names cannot contain @ or :")
    archive = state(ctx).open_archive(create=True)
    if name in archive.config.nodes and not replace:
        raise UsageError(f"node {name!r} exists", hint="use --replace to overwrite it")
    archive.config.nodes[name] = Node(
        name,
        validate_ae_title(aet),
        host,
        validate_port(port),
        tls or bool(tls_ca or tls_cert or tls_no_hostname_check),
        tls_cert,
        tls_key,
        tls_ca,
        tls_no_hostname_check,
    )
    archive.save_config()
    output.stderr.print(f"added node {name}: {archive.config.nodes[name]}", highlight=False)


@nodes_app.command("list")
def list_nodes(
    ctx: typer.Context,
    as_json: JsonRecords = False,
) -> None:
    """List the known nodes.

    Example: pacsctl nodes list --json
    """
    archive = state(ctx).open_archive()
    rows = [asdict(node) for _, node in sorted(archive.config.nodes.items())]
    if not as_json:  # one column says how TLS is checked
        for row in rows:
            row["tls"] = (
                "no"
                if not row["tls"]
                else "yes, no host name check"
                if row["tls_no_hostname_check"]
                else "yes"
            )
    output.emit(rows, ["name", "aet", "host", "port", "tls"], "json" if as_json else "table")


@nodes_app.command("remove")
def remove(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NODE", help="The node's name (from `pacsctl nodes list`)."),
) -> None:
    """Forget a node.

    Example: pacsctl nodes remove old-pacs
    """
    archive = state(ctx).open_archive()
    if archive.config.nodes.pop(name, None) is None:
        raise UsageError(f"no node named {name!r}", hint="see `pacsctl nodes list`")
    archive.save_config()
    output.stderr.print(f"removed node {name}", highlight=False)
