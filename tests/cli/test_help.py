"""The help is the user's manual (issue 10 item 25): every command and group carries an example,
no typer value types (`<bool>`, `<list[str]>`) beside flags and arguments, upper-case argument
names, one-line usage errors with a did-you-mean, and the same restore as README's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from pacsctl.cli.app import app
from tests.helpers import REPO_ROOT, run_cli

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


def _commands(command, path=()):
    """(path, command) of the root, every group and every command."""
    yield " ".join(path), command
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _commands(sub, (*path, name))


def _leaf_commands(command, path=()):
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _help(path: str) -> str:
    result = CliRunner().invoke(app, [*path.split(), "--help"], env=ENV)
    assert result.exit_code == 0, result.output
    return result.output


ALL = dict(_commands(typer.main.get_command(app)))


def test_every_command_help_has_an_example() -> None:
    leaves = dict(_leaf_commands(typer.main.get_command(app)))
    assert {"import", "ls", "serve", "verify", "backup", "nodes add"} <= set(leaves)
    missing = [name for name, command in leaves.items() if "Example" not in (command.help or "")]
    assert missing == []


def test_every_group_help_has_an_example() -> None:
    groups = [name for name, command in ALL.items() if getattr(command, "commands", None)]
    assert {"", "nodes", "config"} <= set(groups)
    assert [name or "pacsctl" for name in groups if "Example" not in _help(name)] == []


@pytest.mark.parametrize("path", sorted(ALL))
def test_help_shows_no_value_types(path: str) -> None:
    """Flags take no value, and argument metavars say what they are: no `<bool>`, `<str>`..."""
    assert re.findall(r"<(?:bool|str|int|float|path|Path|list\[[^]]*\])>", _help(path)) == []


def test_argument_names_are_upper_case_metavars() -> None:
    names = {f"{path} {param.metavar or param.name}" for path, command in ALL.items()
             for param in command.params if param.param_type_name == "argument"}
    assert {"nodes add NAME", "nodes remove NODE", "import PATH", "send NODE", "config set KEY"} <= names
    assert [n for n in names if not n.rsplit(" ", 1)[1].isupper()] == []


def test_usage_lines_name_arguments_plainly() -> None:
    """NODE, [PATH]..., not typer's {NODE} (which reads like a set of choices)."""
    from tests.helpers import invoke_cli

    for args, usage in ((["move", "--help"], "pacsctl move [OPTIONS] NODE"),
                        (["send", "--help"], "pacsctl send [OPTIONS] NODE [PATH]..."),
                        (["nodes", "remove", "--help"], "pacsctl nodes remove [OPTIONS] NODE")):
        text = invoke_cli(*args).stdout
        assert f"Usage: {usage}" in text and "{" not in text.split("\n", 3)[1], text[:300]


def test_a_mistyped_option_is_one_line_with_a_did_you_mean(tmp_path: Path) -> None:
    proc = run_cli("--archive", tmp_path / "a", "ls", "--jsn")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["error: no such option --jsn",
                                        "hint: did you mean --json? (see pacsctl ls --help)"]
    wrong_choice = run_cli("ls", "--level", "studies")
    assert wrong_choice.returncode == 2
    lines = wrong_choice.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1] == "hint: see pacsctl ls --help"
    assert "╭" not in proc.stderr + wrong_choice.stderr  # no boxed panel


def _readme_restore_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("Restore when the archive is lost:", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.strip().splitlines()]
    return [c for c in commands if c and "&&" not in c]


def test_restore_help_describes_the_restore_as_readme_does() -> None:
    text = " ".join(_help("restore").split())
    commands = [c for c in _readme_restore_commands() if "serve" not in c]
    assert len(commands) >= 2
    assert [c for c in commands if c not in text] == []
    assert "--archive /mnt/nas/pacs reindex" not in text + " ".join(_help("reindex").split())


def test_config_set_allow_echoes_the_titles_not_a_python_list(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--archive", str(tmp_path / "a"), "config", "set", "allow", "CT01, VIEWER"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "allow = CT01, VIEWER" in result.stderr
    assert "[" not in result.stderr


def test_readme_set_up_says_how_pacsctl_is_found() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    set_up = readme.split("## Set-up", 1)[1].split("## Commands", 1)[0]
    assert "source .venv/bin/activate" in set_up
