"""`pacsctl config`: the archive's settings (`pacsctl.toml`)."""

from __future__ import annotations

from pathlib import Path

import typer

from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import JsonRecords, Setting
from pacsctl.config import SETTABLE_KEYS, coerce_setting

config_app = typer.Typer(
    help=(
        "Show or change the archive's settings.\n\n"
        "Example: pacsctl config set allow CT01,VIEWER; pacsctl config show"
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `config` command group."""
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show(ctx: typer.Context, as_json: JsonRecords = False) -> None:
    """Show the settings and where the archive is.

    Example: pacsctl config show --json
    """
    archive = state(ctx).open_archive()
    settings: dict[str, object] = {"archive": str(archive.root)}
    settings.update({str(k): getattr(archive.config, k) for k in SETTABLE_KEYS})
    if as_json:
        output.json_line(settings)
    else:
        output.emit([{"setting": k, "value": v} for k, v in settings.items()], ["setting", "value"])


@config_app.command("set")
def set_value(
    ctx: typer.Context,
    key: Setting,
    value: str = typer.Argument(
        ..., metavar="VALUE", help="New value (for allow: comma-separated AE titles)."
    ),
) -> None:
    """Change a setting (`allow` takes AE titles separated by commas; an empty value clears it).

    Example: pacsctl config set ae_title MYPACS
    """
    setting = coerce_setting(key, value)  # a bad setting must not create an archive
    archive = state(ctx).open_archive(create=True)
    setattr(archive.config, key, setting)
    archive.save_config()
    output.stderr.print(f"{key} = {shown_setting(getattr(archive.config, key))}", highlight=False)
    _tell_the_running_node(archive.root, key)


def shown_setting(value: object) -> str:
    """A setting as people write it: `allow = CT01, VIEWER` (not a Python list)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _tell_the_running_node(root: Path, key: str) -> None:
    """A running `serve` keeps what it read at start until told: say how to tell it."""
    from pacsctl.node.pidfile import running_node_pid
    from pacsctl.node.settings import NEED_RESTART

    pid = running_node_pid(root)
    if pid is None:
        return
    if key in NEED_RESTART:
        output.stderr.print(
            f"note: the running node (pid {pid}) uses the new {key} after a restart", highlight=False
        )
    else:
        output.stderr.print(
            f"note: the running node (pid {pid}) keeps the old {key} until `kill -HUP {pid}` (or a restart)",
            highlight=False,
        )
