"""`pacsctl token`: access tokens for the DICOMweb side of `serve --web-port`."""

from __future__ import annotations

from typing import Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import NO_METAVAR, JsonRecords

token_app = typer.Typer(
    help="Tokens for DICOMweb and the viewer page of `serve --web-port` (stored hashed).\n\n"
    "Example: pacsctl token create --study 1.2.840.113619.2.1 --expires 8h --json",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `token` command group."""
    app.add_typer(token_app, name="token")


@token_app.command("create")
def create(
    ctx: typer.Context,
    study: Optional[list[str]] = typer.Option(
        None, "--study", metavar="UID", help="Limit it to this study (repeatable; default: every study)."
    ),
    patient: Optional[str] = typer.Option(
        None, "--patient", metavar="ID", help="Limit it to the studies of this PatientID."
    ),
    expires: str = typer.Option(
        "8h", "--expires", metavar="AGE|TIME", help="When it stops working: 30m, 8h, 7d, or an ISO time."
    ),
    write: bool = typer.Option(False, "--write", metavar=NO_METAVAR, help="Allow STOW-RS (storing)."),
    note: str = typer.Option("", "--note", metavar="TEXT", help="What it is for (shown by `token list`)."),
    web_url: Optional[str] = typer.Option(
        None, "--web-url", metavar="URL", help="Print a viewer link on this server, e.g. http://pacs:8080."
    ),
    as_json: JsonRecords = False,
) -> None:
    """Create a token; its secret is printed once (stored only as a hash).

    A token with --study or --patient sees only those studies: searches leave out the others
    and anything else answers 404. Read-only unless --write.

    Example: pacsctl token create --study 1.2.3.4 --expires 8h --note "Dr. Who, ward 3" --json
    """
    from pacsctl.errors import UsageError
    from pacsctl.web.tokens import TokenStore, parse_expiry

    for uid in study or ():
        if not uid or not all(part.isdigit() for part in uid.split(".")) or len(uid) > 64:
            raise UsageError(
                f"{uid!r} is not a study instance UID", hint="digits and dots, e.g. 1.2.840.113619.2.1"
            )
    archive = state(ctx).open_archive()
    when = parse_expiry(expires)
    issued = TokenStore(archive.root, archive.tmp_dir).create(when, tuple(study or ()), patient, write, note)
    record = {"token": issued.secret, "id": issued.token.id, "expires": issued.token.expires}
    if web_url:
        record["link"] = f"{web_url.rstrip('/')}/?token={issued.secret}"
    if as_json:
        output.json_line(record)
        return
    typer.echo(issued.secret)
    scope = ", ".join(
        filter(None, [f"{len(study or ())} studies" if study else "", "a patient" if patient else ""])
    )
    output.stderr.print(
        f"token {issued.token.id}: {scope or 'every study'}, {'read and write' if write else 'read-only'}, "
        f"expires {issued.token.expires}" + (f"\nlink: {record['link']}" if web_url else ""),
        highlight=False,
    )


@token_app.command("list")
def list_tokens(ctx: typer.Context, as_json: JsonRecords = False) -> None:
    """List the tokens (never their secrets).

    Example: pacsctl token list --json
    """
    from pacsctl.web.tokens import TokenStore

    archive = state(ctx).open_archive()
    rows = []
    for token in TokenStore(archive.root, archive.tmp_dir).all():
        row = token.public()
        row["expired"] = token.expired()
        rows.append(row)
    output.emit(
        rows,
        ["id", "expires", "expired", "write", "studies", "patient", "note"],
        "json" if as_json else "table",
    )


@token_app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: str = typer.Argument(..., metavar="ID", help="The token's id (from `pacsctl token list`)."),
) -> None:
    """Revoke a token: the next request with it gets 401.

    Example: pacsctl token revoke tok-1a2b3c4d
    """
    from pacsctl.web.tokens import TokenStore

    archive = state(ctx).open_archive()
    TokenStore(archive.root, archive.tmp_dir).revoke(token_id)
    output.stderr.print(f"revoked token {token_id}", highlight=False)
