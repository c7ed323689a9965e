"""The `pacsctl` command: global options, command registration and the error boundary.

Each command group lives in its own module with a `register(app)` function; this module only
wires them up and turns exceptions into one-line errors and stable exit codes.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

from pacsctl import __version__
from pacsctl.cli import output
from pacsctl.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, PacsctlError


class _TypelessHelp:
    """--help without typer's value types where they say nothing: `<bool>` beside a flag (it
    takes no value), `<int>` beside -v (counted), `<str>`/`<list[Path]>` beside an argument
    (its metavar, NODE or PATH, says what it is)."""

    def get_params(self, ctx: Any) -> list[Any]:  # click's Context (typer vendors it privately)
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if param.param_type_name == "argument":
                param.display_type_rich = _no_type  # typer shows no metavar-less argument type otherwise
                param._usage_display_name = _usage_name.__get__(param)  # NODE, not typer's {NODE}
            elif (
                getattr(param, "is_flag", False) or getattr(param, "count", False)
            ) and param.metavar is None:
                param.metavar = ""
        return params


def _no_type(ctx: typer.Context) -> None:
    return None


def _usage_name(param: Any) -> str:
    """An argument on the usage line as POSIX writes it: NODE when required, [PATH] when not,
    ... when repeatable (typer braces required ones, as if they were choices: {NODE})."""
    name = str(param.display_name_raw)
    name = name if param.required else f"[{name}]"
    return name + ("..." if param.nargs != 1 else "")


class PacsctlCommand(_TypelessHelp, TyperCommand):
    """A pacsctl command (help as above)."""


class PacsctlSubgroup(_TypelessHelp, TyperGroup):
    """A pacsctl command group such as `nodes` (help as above)."""


class PacsctlGroup(_TypelessHelp, TyperGroup):
    """The root command: its `main` is the error boundary, for the console script and for
    in-process runs alike (typer's `CliRunner` calls `main` too)."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        """Run one command line; return its exit code (or exit with it when standalone)."""
        code = _guarded(self, list(sys.argv[1:] if args is None else args), prog_name or "pacsctl", extra)
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="pacsctl",
    cls=PacsctlGroup,
    help="Run and look after a PACS: a DICOM node, bulk import, query/retrieve, backup and verify.\n\n"
    "Example: pacsctl --archive /srv/pacs import /media/cdrom; pacsctl ls --help",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks may hold patient data: only with --debug
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class State:
    """The global options of one invocation: made by `run`, filled by the root callback, and
    reached by every command through its context (`ctx.obj`). Nothing is kept between runs."""

    archive: Optional[Path] = None
    verbosity: int = 0  # -1 with --quiet
    debug: bool = False

    @property
    def quiet(self) -> bool:
        """--quiet: only errors on stderr."""
        return self.verbosity < 0

    def open_archive(self, create: bool = False):
        """Open the archive the global options point at. Only commands that store pass
        `create=True` (import, serve, get, move into the archive, nodes add, config set); the
        others fail with `error: no archive at PATH` (exit 2) instead of making an empty one."""
        from pacsctl.archive.archive import Archive

        return Archive.open(self.archive, create=create)

    def open_archive_for_dry_run(self):
        """The archive to plan against without creating anything (`import --dry-run`)."""
        from pacsctl.archive.archive import Archive

        return Archive.for_dry_run(self.archive)


def state(ctx: typer.Context) -> State:
    """The global options of this invocation (the `State` in the context chain)."""
    found = ctx.find_object(State)
    if found is None:  # a command invoked without `run` (e.g. a bare CliRunner on a sub-app)
        found = ctx.ensure_object(State)
    return found


def _version(value: bool) -> None:
    if value:
        print(f"pacsctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    archive: Optional[Path] = typer.Option(
        None,
        "--archive",
        "-a",
        metavar="DIR",
        envvar="PACSCTL_ARCHIVE",
        show_envvar=True,
        help="Archive folder (default: the user data folder, created on first use).",
    ),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More log output on stderr (-vv for debug)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run and look after a PACS archive from the command line.

    Example: pacsctl --archive /srv/pacs import /media/cdrom
    """
    opts = ctx.ensure_object(State)
    opts.archive, opts.verbosity, opts.debug = archive, (-1 if quiet else verbose), debug
    output.set_quiet(quiet)
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
    "serve",
    "importing",
    "listing",
    "remote",
    "backup",
    "verify",
    "restore",
    "reindex",
    "audit",
    "quarantine",
    "completions",
    "nodes",
    "config_cmd",
    "migrate",
    "token",
    "export",
    "inspect",
    "attach",
    "anonymize",
    "route",
)


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"pacsctl.cli.{name}").register(app)
    # Every command and group gets pacsctl's help format (unless it asked for a class of its own).
    commands = list(app.registered_commands)
    for group in app.registered_groups:
        group.cls = PacsctlSubgroup
        if group.typer_instance is not None:
            commands += group.typer_instance.registered_commands
    for command in commands:
        if command.cls in (None, TyperCommand):  # typer's default: no class of its own
            command.cls = PacsctlCommand


_register_commands()


def _guarded(command: TyperGroup, args: list[str], prog_name: str, extra: dict[str, Any]) -> int:
    """Run the command line; exceptions become one `error: ...` line with a hint and the exit code
    their class carries; the parser's usage errors (a mistyped option, a value outside the
    choices) too, with a did-you-mean."""
    opts = State()
    token = output.begin_run()
    try:
        code = TyperGroup.main(
            command, args=args, prog_name=prog_name, standalone_mode=False, obj=opts, **extra
        )
        code = code if isinstance(code, int) else 0
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into a silent exit 130
            output.error("interrupted")
        return code
    except typer.TyperException as exc:  # the parser's errors (click's, vendored by typer)
        return _usage_error(exc)
    except PacsctlError as exc:
        if opts.debug:
            raise
        output.error(str(exc), exc.hint)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        output.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: no traceback (it may hold patient data)
        if opts.debug:
            raise
        output.error(
            f"internal error: {type(exc).__name__}",
            hint="run again with --debug for the traceback, and report it",
        )
        return EXIT_ERROR
    finally:
        output.end_run(token)


def _usage_error(exc: typer.TyperException) -> int:
    """One `error:` line and a `hint:` line for an error of the command-line parser."""
    ctx = getattr(exc, "ctx", None)
    code = getattr(exc, "exit_code", EXIT_USAGE)
    # typer names this class only by name too: the help of a group run without a command.
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        sys.stdout.write(ctx.get_help() + "\n")
        return code
    see = f"see {ctx.command_path} --help" if ctx is not None else "see pacsctl --help"
    option = getattr(exc, "option_name", None)
    if option is not None:  # NoSuchOption
        known = (
            [name for param in ctx.command.get_params(ctx) for name in param.opts] if ctx is not None else []
        )
        close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? ({see})" if close else see
        output.error(f"no such option {option}", hint)
        return code
    message = exc.format_message().strip()
    output.error(message[:1].lower() + message[1:], see)
    return code


def run(args: Sequence[str] | None = None) -> int:
    """Run one pacsctl command line in this process and return its exit code."""
    return typer.main.get_command(app).main(args=args, prog_name="pacsctl", standalone_mode=False)


def main() -> None:
    """Console-script entry point: `run` the command line and exit with its code."""
    sys.exit(run())
