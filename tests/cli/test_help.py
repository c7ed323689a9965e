"""Every command's --help carries an example: the docstring is the user's manual."""

from __future__ import annotations

import typer

from pacsctl.cli.app import app


def _leaf_commands(command, path=()):
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_every_command_help_has_an_example() -> None:
    leaves = dict(_leaf_commands(typer.main.get_command(app)))
    assert {"import", "ls", "serve", "verify", "backup", "nodes add"} <= set(leaves)
    missing = [name for name, command in leaves.items() if "Example" not in (command.help or "")]
    assert missing == []
