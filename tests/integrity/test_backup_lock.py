"""One writer per backup folder: real `pacsctl backup` processes held mid-run (tests/integrity/
stalled.py) against a second backup, `verify --repair`, `--wait`, and kill -9."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacsctl.integrity.backup import backup
from pacsctl.integrity.manifest import LOCK_NAME, read_manifest
from pacsctl.integrity.restore import MARKER
from pacsctl.storage.locks import LockBusy, LockHolder, read_holder
from tests.helpers import cli_env, invoke_cli
from tests.integrity.stalled import StalledBackup, first_file
from tests.integrity.test_verify import make_archive


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "nas"


@pytest.fixture
def stalled(archive_dir: Path, ct_factory: Any, dest: Path) -> Iterator[StalledBackup]:
    """A folder backup of a 6-instance archive, not yet started."""
    archive = make_archive(archive_dir, ct_factory.series(6, patient_id="P1"))
    run = StalledBackup(archive.path_of(first_file(archive)), "backup", str(dest))
    archive.close()
    yield run
    run.close()


def holds_folder(dest: Path) -> Any:
    def holds(pid: int) -> bool:
        holder = read_holder(dest / LOCK_NAME)
        return holder is not None and holder.pid == pid

    return holds


def test_a_second_backup_exits_1_naming_the_running_one_which_finishes(stalled: StalledBackup, dest: Path) -> None:
    pid = stalled.start(holds_folder(dest))
    holder = read_holder(dest / LOCK_NAME)
    assert holder is not None and holder.what == "backup" and holder.started
    second = invoke_cli("backup", dest)
    assert second.returncode == 1
    [line, hint] = second.stderr.strip().splitlines()
    assert line == f"error: {dest} is in use by backup (pid {pid}, since {holder.started})"
    assert "--wait" in hint
    first = stalled.feed()
    assert first.returncode == 0, first.stderr
    assert len(read_manifest(dest).entries) == 6
    assert invoke_cli("verify", "--backup", dest).returncode == 0


def test_verify_repair_beside_a_backup_is_refused(stalled: StalledBackup, dest: Path, archive_dir: Path) -> None:
    assert invoke_cli("backup", dest).returncode == 0
    (dest / stalled.path.relative_to(archive_dir)).unlink()  # so the next backup copies the stalled file again
    pid = stalled.start(holds_folder(dest))
    refused = invoke_cli("verify", "--backup", dest, "--repair")
    assert refused.returncode == 1
    assert f"is in use by backup (pid {pid}, since " in refused.stderr
    assert stalled.feed().returncode == 0


def test_a_backup_killed_with_sigkill_leaves_no_stale_lock(stalled: StalledBackup, dest: Path) -> None:
    pid = stalled.start(holds_folder(dest))
    stalled.kill()
    assert read_holder(dest / LOCK_NAME).pid == pid  # the file stays, its flock is gone
    started = time.monotonic()
    again = invoke_cli("backup", dest, "--json")
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 30  # ran at once: nothing to wait for
    assert json.loads(again.stdout.splitlines()[-1])["instances"] == 6
    assert "waiting" not in again.stderr


def test_wait_waits_for_the_running_backup_then_runs(stalled: StalledBackup, dest: Path) -> None:
    import subprocess
    import sys

    pid = stalled.start(holds_folder(dest))
    waiter = subprocess.Popen(
        [sys.executable, "-m", "pacsctl", "backup", str(dest), "--wait", "--json"],
        env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        told = waiter.stderr.readline()  # blocks until the waiter found the folder busy
        assert told.startswith(f"note: waiting for backup (pid {pid}, since "), told
        assert waiter.poll() is None
        assert stalled.feed().returncode == 0
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["skipped"] == 6  # the first had copied everything


def test_the_library_call_raises_lockbusy_with_the_holder(stalled: StalledBackup, dest: Path, archive_dir: Path) -> None:
    from pacsctl.archive.archive import Archive

    pid = stalled.start(holds_folder(dest))
    with Archive.open(archive_dir, create=False) as archive, pytest.raises(LockBusy) as caught:
        backup(archive, dest)
    assert isinstance(caught.value.holder, LockHolder) and caught.value.holder.pid == pid
    assert caught.value.exit_code == 1
    assert stalled.feed().returncode == 0


def test_a_second_restore_into_the_same_folder_exits_1_naming_the_first(
    archive_dir: Path, ct_factory: Any, dest: Path, tmp_path: Path
) -> None:
    archive = make_archive(archive_dir, ct_factory.series(3, patient_id="P1"))
    relpath = first_file(archive)
    archive.close()
    assert invoke_cli("backup", dest).returncode == 0
    target = tmp_path / "restored"
    run = StalledBackup(dest / relpath, "--archive", str(target), "restore", str(dest))
    try:
        pid = run.start(lambda pid: (h := read_holder(target / MARKER)) is not None and h.pid == pid)
        second = invoke_cli("--archive", target, "restore", dest)
        assert second.returncode == 1
        assert f"error: {target} is in use by restore (pid {pid}, since " in second.stderr
        first = run.feed()
        assert first.returncode == 0, first.stderr
        assert not (target / MARKER).exists()
        assert invoke_cli("--archive", target, "restore", dest).returncode == 2  # restored: not empty
    finally:
        run.close()
