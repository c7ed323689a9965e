"""A read-only archive (a read-only mount: a snapshot, a backup disk, media): `verify`, `ls` and
`backup` read it without writing; `serve`, `reindex` and `verify --repair-from`, which must
write, say what is read-only in one line (they failed with `internal error: OSError`).

The archive is bind-mounted read-only in a private mount namespace of the command alone
(`unshare --mount`), so nothing is left mounted whatever happens to the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli_env
from tests.integrity.test_verify import dead_pid, make_archive


def run_read_only(source: Path, mount_point: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`pacsctl ARGS` with `source` seen read-only at `mount_point` (only by that process)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1): cannot mount read-only here")
    mount_point.mkdir(exist_ok=True)
    userns = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = 'mount --bind -o ro "$1" "$2" || exit 99; shift 2; exec "$@"'
    proc = subprocess.run([unshare, "--mount", *userns, "sh", "-c", script, "sh", str(source), str(mount_point),
                           sys.executable, "-m", "pacsctl", *map(str, args)],
                          env=cli_env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if proc.returncode == 99 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot make a read-only mount here: {proc.stderr.strip()[:200]}")
    return proc


@pytest.fixture
def read_only(tmp_path: Path, ct_factory: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(the real folder holding `archive/` with 4 instances and a leftover, its read-only view)."""
    source = tmp_path / "disk"
    make_archive(source / "archive", ct_factory.series(4)).close()
    (source / "archive" / "tmp" / f"{dead_pid()}-4242.part").write_bytes(b"partial")
    monkeypatch.delenv("PACSCTL_ARCHIVE", raising=False)
    return source, tmp_path / "ro"


def no_internal_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("mode", [[], ["--quick"]], ids=["full", "quick"])
def test_verify_checks_a_read_only_archive_without_writing(mode: list[str], read_only: tuple[Path, Path]) -> None:
    source, view = read_only
    proc = run_read_only(source, view, "--archive", view / "archive", "verify", "--json", *mode)
    no_internal_error(proc)
    assert proc.returncode == 0, proc.stderr
    *findings, summary = [json.loads(line) for line in proc.stdout.splitlines()]
    assert summary["checked"] == 4 and summary["problems"] == 0 and summary["ok"] is True
    assert [(f["problem"], f["action"]) for f in findings] == [("leftover_temp", "left: read-only")]
    assert (source / "archive" / "tmp" / f"{findings[0]['path'].split('/')[-1]}").exists()


def test_verify_finds_damage_in_a_read_only_archive(read_only: tuple[Path, Path]) -> None:
    source, view = read_only
    victim = sorted((source / "archive" / "objects").rglob("*.dcm"))[0]
    os.truncate(victim, 100)
    proc = run_read_only(source, view, "--archive", view / "archive", "verify")
    no_internal_error(proc)
    assert proc.returncode == 3 and "wrong_size" in proc.stdout


def test_ls_and_backup_read_a_read_only_archive(read_only: tuple[Path, Path], tmp_path: Path) -> None:
    source, view = read_only
    listed = run_read_only(source, view, "--archive", view / "archive", "ls", "--level", "instance", "--json")
    no_internal_error(listed)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 4
    copied = run_read_only(source, view, "--archive", view / "archive", "backup", tmp_path / "backup")
    no_internal_error(copied)
    assert copied.returncode == 0, copied.stderr
    checked = run_read_only(tmp_path, view, "--archive", view / "disk" / "archive", "verify", "--backup", view / "backup")
    no_internal_error(checked)  # the backup, read-only too
    assert checked.returncode == 0, checked.stderr + checked.stdout


@pytest.mark.parametrize("command", [["reindex"], ["serve", "--port", "0"], ["verify", "--repair-from", "BACKUP"]],
                         ids=["reindex", "serve", "repair"])
def test_commands_that_write_say_the_archive_is_read_only(command: list[str], read_only: tuple[Path, Path], tmp_path: Path) -> None:
    source, view = read_only
    backup = source / "backup"
    (backup / "objects").mkdir(parents=True)
    args = [str(view / "backup") if a == "BACKUP" else a for a in command]
    proc = run_read_only(source, view, "--archive", view / "archive", *args)
    no_internal_error(proc)
    assert proc.returncode == 1, proc.stderr
    assert f"error: the archive at {view / 'archive'} is read-only (read-only file system" in proc.stderr
    assert "hint:" in proc.stderr
