"""Only commands that store create an archive; a mistyped path is an error everywhere else.

`pacsctl --archive /nonexistent/archive ls` used to create that folder and answer "nothing
found", exit 0, and a `verify` there then checked 0 files, exit 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli

READ_ONLY_COMMANDS = [
    ["ls"],
    ["ls", "--level", "instance", "--json"],
    ["quarantine"],
    ["nodes", "list"],
    ["nodes", "remove", "old-pacs"],
    ["config", "show"],
    ["audit"],
    ["verify"],
    ["verify", "--quick"],
    ["reindex"],
    ["backup", "BACKUP_DEST"],
    ["send", "PACS@127.0.0.1:1", "--study", "1.2.3"],
    ["import", "INPUT", "--dry-run"],
]


@pytest.mark.parametrize("args", READ_ONLY_COMMANDS, ids=lambda a: " ".join(a))
def test_commands_that_do_not_store_never_create_an_archive(tmp_path: Path, ct_factory, args: list[str]) -> None:
    typo = tmp_path / "nonexistent" / "archive"
    args = [str(tmp_path / "backup") if a == "BACKUP_DEST" else a for a in args]
    args = [str(ct_factory().parent) if a == "INPUT" else a for a in args]
    out = run_cli("--archive", typo, *args)
    assert not typo.exists() and not typo.parent.exists(), f"{args} created {typo}"
    if args[0] == "import":  # a dry run plans against an empty archive and says so
        assert out.returncode == 0, out.stderr
        assert f"no archive at {typo}" in out.stderr
        return
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert lines[0] == f"error: no archive at {typo}"
    assert lines[1].startswith("hint:") and "--archive" in lines[1]


def test_commands_that_store_create_the_archive(tmp_path: Path, ct_factory) -> None:
    for n, args in enumerate([
        ["import", str(ct_factory().parent)],
        ["nodes", "add", "old-pacs", "--aet", "OLDPACS", "--host", "127.0.0.1", "--port", "104"],
        ["config", "set", "ae_title", "MYPACS"],
    ]):
        root = tmp_path / f"new{n}" / "archive"
        out = run_cli("--archive", root, *args)
        assert out.returncode == 0, (args, out.stderr)
        assert (root / "pacsctl.toml").is_file() and (root / "objects").is_dir()
        # and once it exists, the commands that only read it work
        shown = run_cli("--archive", root, "config", "show", "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["archive"] == str(root)


def test_invalid_setting_does_not_create_the_archive(tmp_path: Path) -> None:
    root = tmp_path / "new" / "archive"
    out = run_cli("--archive", root, "config", "set", "port", "not-a-port")
    assert out.returncode == 2 and not root.exists()


def test_verify_of_an_archive_without_files_warns_with_the_expected_count(tmp_path: Path, ct_factory) -> None:
    root = tmp_path / "archive"
    assert run_cli("--archive", root, "config", "set", "ae_title", "EMPTY").returncode == 0
    empty = run_cli("--archive", root, "verify")
    assert empty.returncode == 0
    assert f"warning: the archive at {root} holds no instance files; the index expected 0" in empty.stderr

    ct_factory.series(3)
    assert run_cli("--archive", root, "import", ct_factory.directory).returncode == 0
    for stored in (root / "objects").rglob("*.dcm"):  # e.g. the disk under objects/ is not mounted
        stored.unlink()
    gone = run_cli("--archive", root, "verify")
    assert gone.returncode == 3
    assert "holds no instance files; the index expected 3" in gone.stderr

    full = tmp_path / "full"
    assert run_cli("--archive", full, "import", ct_factory.directory).returncode == 0
    fine = run_cli("--archive", full, "verify")
    assert fine.returncode == 0 and "holds no instance files" not in fine.stderr
