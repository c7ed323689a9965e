"""The `pacsctl` command: global options, command registration and the error boundary.

Each command group lives in its own module with a `register(app)` function; this module only
wires them up and turns exceptions into one-line errors and stable exit codes.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from pacsctl import __version__
from pacsctl.cli import output
from pacsctl.errors import EXIT_ERROR, EXIT_INTERRUPTED, PacsctlError

app = typer.Typer(
    name="pacsctl",
    help="Run and look after a PACS: a DICOM node, bulk import, query/retrieve, backup and verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks may hold patient data: only with --debug
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    """Global options, shared by every command through `ctx.obj`."""

    archive: Optional[Path] = None
    verbosity: int = 0
    debug: bool = False

    def open_archive(self, create: bool = True):
        """Open the archive the global options point at."""
        from pacsctl.archive.archive import Archive

        return Archive.open(self.archive, create=create)


_state = State()


def state(ctx: typer.Context | None = None) -> State:
    """The global options of this invocation."""
    return ctx.obj if ctx is not None and isinstance(ctx.obj, State) else _state


def _version(value: bool) -> None:
    if value:
        print(f"pacsctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    archive: Optional[Path] = typer.Option(
        None, "--archive", "-a", envvar="PACSCTL_ARCHIVE", show_envvar=True,
        help="Archive folder (default: the user data folder, created on first use).",
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output on stderr (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Run and look after a PACS archive from the command line.

    Example: pacsctl --archive /srv/pacs import /media/cdrom
    """
    _state.archive, _state.verbosity, _state.debug = archive, (-1 if quiet else verbose), debug
    output.quiet = quiet
    ctx.obj = _state
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if verbose < 2:
        # Library log lines can echo identifiers and values: only with -vv. A handler filter,
        # since pydicom resets its logger's level when it is (lazily) imported.
        handler.addFilter(_no_library_chatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _no_library_chatter(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or not record.name.startswith(("pydicom", "pynetdicom"))


# One module per command group, each with `register(app)`; the order is the order of `--help`.
COMMAND_MODULES = (
    "serve", "importing", "listing", "remote", "backup", "verify", "reindex", "audit",
    "quarantine", "completions", "nodes", "config_cmd",
)


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"pacsctl.cli.{name}").register(app)


_register_commands()


def main() -> None:
    """Console-script entry point: run the app, map errors to one line and an exit code."""
    try:
        app(standalone_mode=True)
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into a silent exit 130
            output.error("interrupted")
        raise
    except PacsctlError as exc:
        if _state.debug:
            raise
        output.error(str(exc), exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        output.error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # the last line of defence: no traceback (it may hold patient data)
        if _state.debug:
            raise
        output.error(f"internal error: {type(exc).__name__}", hint="run again with --debug for the traceback, and report it")
        sys.exit(EXIT_ERROR)
