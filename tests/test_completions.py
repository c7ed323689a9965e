"""Completion scripts: the committed ones match the app, parse, and complete what they should."""

from __future__ import annotations

import shutil
import subprocess
from enum import Enum
from pathlib import Path
from typing import Optional

import pytest
import typer

from pacsctl.cli.completions import FILE_NAMES, command_tree, generate
from tests.helpers import REPO_ROOT, bash_complete

COMPLETIONS_DIR = REPO_ROOT / "completions"
STALE_HINT = "completion scripts are stale: run python -m pacsctl.cli.completions and commit them"



def _real_app() -> typer.Typer:
    from pacsctl.cli.app import app

    return app


class Level(str, Enum):
    """A choice parameter for the sample app."""

    patient = "patient"
    study = "study"


def _sample_app() -> typer.Typer:
    """A small app with what completion must handle: groups, choices, paths, flags, counts."""
    app = typer.Typer(name="pacsctl", add_completion=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    nodes = typer.Typer(help="The known remote nodes.")
    app.add_typer(nodes, name="nodes")

    @app.callback()
    def main(archive: Optional[Path] = typer.Option(None, "--archive", "-a", help="Archive."),
             verbose: int = typer.Option(0, "--verbose", "-v", count=True)) -> None:
        """Root."""

    @app.command("import")
    def import_(paths: list[Path], jobs: int = typer.Option(2, "--jobs", "-j"),
                dry_run: bool = typer.Option(False, "--dry-run/--no-dry-run")) -> None:
        """Import files."""

    @app.command("ls")
    def ls(level: Level = typer.Option(Level.study, "--level", help="Level.")) -> None:
        """List."""

    @nodes.command("add")
    def add(name: str, aet: str = typer.Option(..., "--aet"),
            out: Path = typer.Option(None, "--out", file_okay=False),
            secret: bool = typer.Option(False, "--secret", hidden=True)) -> None:
        """Add a node."""

    @nodes.command("list")
    def list_() -> None:
        """List nodes."""

    return app


@pytest.mark.parametrize("shell", sorted(FILE_NAMES))
def test_committed_completions_are_current(shell: str) -> None:
    committed = COMPLETIONS_DIR / FILE_NAMES[shell]
    assert committed.is_file(), STALE_HINT
    assert committed.read_text(encoding="utf-8") == generate(_real_app(), shell), STALE_HINT


def test_bash_script_parses() -> None:
    subprocess.run(["bash", "-n", str(COMPLETIONS_DIR / FILE_NAMES["bash"])], check=True)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(shell: str) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed")
    subprocess.run([shell, "-n", str(COMPLETIONS_DIR / FILE_NAMES[shell])], check=True)


def test_tree_covers_every_command_and_option_of_the_app() -> None:
    import typer.main

    root = typer.main.get_command(_real_app())
    specs = {spec.key: spec for spec in command_tree(_real_app())}
    assert set(specs["pacsctl"].options[0].names) >= {"--archive"}
    for name, cmd in getattr(root, "commands", {}).items():
        if not cmd.hidden:
            assert f"pacsctl {name}" in specs
            spec_names = {n for o in specs[f"pacsctl {name}"].options for n in o.names}
            assert {"--help"} | {o for p in cmd.params if not getattr(p, "hidden", False)
                                 for o in p.opts if p.param_type_name == "option"} <= spec_names


def test_bash_completes_the_real_app(tmp_path: Path) -> None:
    script = tmp_path / "pacsctl.bash"
    script.write_text(generate(_real_app(), "bash"))
    top = command_tree(_real_app())[0]
    assert set(bash_complete(script, "pacsctl ", tmp_path)) == {n for n, _ in top.subcommands}
    assert "--archive" in bash_complete(script, "pacsctl --", tmp_path)


@pytest.mark.parametrize("line, expected", [
    ("pacsctl ", ["import", "ls", "nodes"]),
    ("pacsctl --", ["--archive", "--verbose", "--help"]),
    ("pacsctl -a dat", ["data"]),
    ("pacsctl -a data nodes ", ["add", "list"]),
    ("pacsctl nodes add --", ["--aet", "--out", "--help"]),
    ("pacsctl nodes add --aet ", []),
    ("pacsctl nodes add --out ", ["data"]),
    ("pacsctl ls --level ", ["patient", "study"]),
    ("pacsctl import --jobs 3 f", ["file.dcm"]),
    ("pacsctl import --no", ["--no-dry-run"]),
])
def test_bash_completion_behaviour(tmp_path: Path, line: str, expected: list[str]) -> None:
    script = tmp_path / "pacsctl.bash"
    script.write_text(generate(_sample_app(), "bash"))
    (tmp_path / "data").mkdir()
    (tmp_path / "file.dcm").write_bytes(b"")
    assert sorted(bash_complete(script, line, tmp_path)) == sorted(expected)


def test_fish_completion_behaviour(tmp_path: Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish not installed")
    script = tmp_path / "pacsctl.fish"
    script.write_text(generate(_sample_app(), "fish"))

    def complete(line: str) -> set[str]:
        proc = subprocess.run(["fish", "-c", f"source {script}; complete -C '{line}'"],
                              capture_output=True, text=True, check=True, cwd=tmp_path)
        return {row.split("\t")[0] for row in proc.stdout.splitlines()}

    assert complete("pacsctl ") == {"import", "ls", "nodes"}
    assert complete("pacsctl -a x nodes ") == {"add", "list"}
    assert complete("pacsctl ls --level ") == {"patient", "study"}
    assert "--secret" not in complete("pacsctl nodes add --")


def test_unknown_shell_is_refused() -> None:
    with pytest.raises(ValueError):
        generate(_sample_app(), "tcsh")


# Runs the zsh function outside a completion widget: zsh's completion builtins are replaced by
# stubs printing what they would offer (zsh filters by the typed prefix itself).
ZSH_DRIVER = r"""
compdef() { :; }
source "$1"
_describe() { local -a arr; arr=("${(@P)${@[-1]}}"); print -l -- "${arr[@]%%:*}"; }
compadd() { print -l -- "${@[2,-1]}"; }
_files() { print -- "<files$*>"; }
_message() { print -- "<message>"; }
words=(${(z)2}); [[ $2 == *" " ]] && words+=("")
CURRENT=${#words}
_pacsctl
"""


@pytest.mark.parametrize("line, expected", [
    ("pacsctl ", {"import", "ls", "nodes"}),
    ("pacsctl -a data nodes ", {"add", "list"}),
    ("pacsctl nodes add --", {"--aet", "--out", "--help", "-h"}),
    ("pacsctl nodes add --out ", {"<files-/>"}),
    ("pacsctl nodes add --aet ", {"<message>"}),
    ("pacsctl ls --level ", {"patient", "study"}),
    ("pacsctl import --jobs 3 ", {"<files>"}),
])
def test_zsh_completion_behaviour(tmp_path: Path, line: str, expected: set[str]) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh not installed")
    script = tmp_path / "_pacsctl"
    script.write_text(generate(_sample_app(), "zsh"))
    proc = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER, "driver", str(script), line],
                          capture_output=True, text=True, check=True)
    assert set(proc.stdout.split()) == expected


@pytest.mark.parametrize("shell", ["bash", "fish"])
def test_completion_command_prints_the_script(shell: str) -> None:
    from typer.testing import CliRunner

    from pacsctl.cli.completions import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None:
        """Keeps `completion` a sub-command."""

    result = CliRunner().invoke(app, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert result.output == generate(_real_app(), shell)


def test_pacsctl_completion_runs_end_to_end() -> None:
    import typer.main

    if "completion" not in typer.main.get_command(_real_app()).commands:
        pytest.skip("`completions` not registered in pacsctl.cli.app COMMAND_MODULES")
    from tests.helpers import run_cli

    proc = run_cli("completion", "zsh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == generate(_real_app(), "zsh")


# -- node names: read from the archive's pacsctl.toml by the scripts themselves (no Python) -----

@pytest.fixture
def nodes_archive(tmp_path: Path) -> Path:
    from pacsctl.config import Config, Node, dump_config

    archive = tmp_path / "archive"
    archive.mkdir()
    config = Config(nodes={name: Node(name, name.upper()[:16], "10.0.0.5", 104) for name in ("old-pacs", "orthanc")})
    (archive / "pacsctl.toml").write_text(dump_config(config), encoding="utf-8")
    return archive


NODE_LINES = [
    "pacsctl --archive {a} send ",
    "pacsctl --archive = {a} send ",  # how bash splits --archive={a} (at '=', COMP_WORDBREAKS)
    "pacsctl -a {a} query o",
    "pacsctl -a {a} nodes remove ",
    "pacsctl --archive {a} echo --count 2 ",
    "pacsctl -a {a} move orthanc --to ",  # the destination too (issue 11)
]


@pytest.mark.parametrize("line", NODE_LINES)
def test_bash_completes_node_names(tmp_path: Path, nodes_archive: Path, line: str) -> None:
    script = tmp_path / "pacsctl.bash"
    script.write_text(generate(_real_app(), "bash"))
    assert set(bash_complete(script, line.format(a=nodes_archive), tmp_path)) == {"old-pacs", "orthanc"}


def test_bash_node_names_from_the_environment_and_files_after_the_node(tmp_path: Path, nodes_archive: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "pacsctl.bash"
    script.write_text(generate(_real_app(), "bash"))
    monkeypatch.setenv("PACSCTL_ARCHIVE", str(nodes_archive))
    assert set(bash_complete(script, "pacsctl move ", tmp_path)) == {"old-pacs", "orthanc"}
    (tmp_path / "study.dcm").write_bytes(b"")
    assert bash_complete(script, "pacsctl send orthanc stu", tmp_path) == ["study.dcm"]
    monkeypatch.setenv("PACSCTL_ARCHIVE", str(tmp_path / "none"))
    assert bash_complete(script, "pacsctl move ", tmp_path) == []


@pytest.mark.parametrize("line", NODE_LINES[:1] + NODE_LINES[2:4] + ["pacsctl --archive={a} get "])
def test_zsh_completes_node_names(tmp_path: Path, nodes_archive: Path, line: str) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh not installed")
    script = tmp_path / "_pacsctl"
    script.write_text(generate(_real_app(), "zsh"))
    proc = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER, "driver", str(script), line.format(a=nodes_archive)],
                          capture_output=True, text=True, check=True)
    assert set(proc.stdout.split()) == {"old-pacs", "orthanc"}


@pytest.mark.parametrize("line", NODE_LINES[:1] + NODE_LINES[2:4] + ["pacsctl --archive={a} get "])
def test_fish_completes_node_names(tmp_path: Path, nodes_archive: Path, line: str) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish not installed")
    script = tmp_path / "pacsctl.fish"
    script.write_text(generate(_real_app(), "fish"))
    proc = subprocess.run(["fish", "-c", f"source {script}; complete -C '{line.format(a=nodes_archive)}'"],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    names = {row.split("\t")[0] for row in proc.stdout.splitlines()}
    assert {"old-pacs", "orthanc"} <= names and not names - {"old-pacs", "orthanc"}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_positional_arguments_complete_by_position(tmp_path: Path, shell: str) -> None:
    """`config set KEY VALUE`: the keys complete first, nothing is offered for the value."""
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} not installed")
    keys = {"ae_title", "port", "host", "on_conflict", "allow", "max_associations",
            "acse_timeout", "dimse_timeout", "network_timeout", "max_instance_size"}
    script = tmp_path / FILE_NAMES[shell]
    script.write_text(generate(_real_app(), shell))

    def complete(line: str) -> set[str]:
        if shell == "bash":
            return set(bash_complete(script, line, tmp_path))
        if shell == "zsh":
            out = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER, "driver", str(script), line],
                                 capture_output=True, text=True, check=True).stdout
            return set(out.split()) - {"<message>"}
        out = subprocess.run(["fish", "-c", f"source {script}; complete -C '{line}'"],
                             capture_output=True, text=True, check=True, cwd=tmp_path).stdout
        return {row.split("\t")[0] for row in out.splitlines()}

    assert complete("pacsctl config set ") == keys
    assert complete("pacsctl config set port ") == set()
