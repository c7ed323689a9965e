"""SIGHUP: a running `pacsctl serve` takes the archive's new settings without a restart, and
`config set` says how to tell it (issue 10 item 7). Real processes, real associations."""

from __future__ import annotations

import signal
import time

import pytest

from pacsctl.config import Node
from pacsctl.errors import NetworkError
from pacsctl.net import scu
from tests.helpers import run_cli


def _echo_as(port: int, calling: str) -> bool:
    try:
        scu.echo(Node("n", "PACSCTL", "127.0.0.1", port), calling_aet=calling, timeout=5)
        return True
    except NetworkError:
        return False


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_the_allow_list_in_every_worker(serve_factory, archive_dir, workers):
    assert run_cli("--archive", archive_dir, "config", "set", "allow", "OLDSCU").returncode == 0
    srv = serve_factory(archive_dir, "--workers", workers)
    pid = srv.process.pid
    assert (archive_dir / "serve.pid").read_text().strip() == str(pid)
    assert not _echo_as(srv.port, "NEWSCU")

    changed = run_cli("--archive", archive_dir, "config", "set", "allow", "OLDSCU,NEWSCU")
    assert changed.returncode == 0
    assert f"kill -HUP {pid}" in changed.stderr  # it says how to tell the running node
    assert not _echo_as(srv.port, "NEWSCU")  # not before it is told

    srv.process.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while srv.stderr().count("settings reloaded") < int(workers):
        assert time.monotonic() < deadline, srv.stderr()
        time.sleep(0.1)
    assert "allow: OLDSCU -> OLDSCU, NEWSCU" in srv.stderr()
    assert "need a restart" in srv.stderr()
    for _ in range(6):  # whichever worker takes it
        assert _echo_as(srv.port, "NEWSCU")
    assert srv.process.proc.poll() is None  # SIGHUP did not end it

    restart = run_cli("--archive", archive_dir, "config", "set", "port", "11113")
    assert "restart" in restart.stderr and f"pid {pid}" in restart.stderr
    assert srv.stop() == 0
    assert not (archive_dir / "serve.pid").exists()
    quiet = run_cli("--archive", archive_dir, "config", "set", "allow", "OLDSCU")
    assert "kill -HUP" not in quiet.stderr  # no node running: nothing to tell


def test_sighup_keeps_what_the_command_line_set(serve_factory, archive_dir):
    assert run_cli("--archive", archive_dir, "config", "set", "allow", "OLDSCU").returncode == 0
    srv = serve_factory(archive_dir, "--workers", "1", "--allow", "CLISCU")
    run_cli("--archive", archive_dir, "config", "set", "allow", "NEWSCU")
    srv.process.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "settings reloaded" not in srv.stderr():
        assert time.monotonic() < deadline, srv.stderr()
        time.sleep(0.1)
    assert _echo_as(srv.port, "CLISCU") and not _echo_as(srv.port, "NEWSCU")
    assert srv.stop() == 0


def test_config_set_checks_timeouts(archive_dir):
    bad = run_cli("--archive", archive_dir, "config", "set", "acse_timeout", "0")
    assert bad.returncode == 2 and "acse_timeout" in bad.stderr
    assert run_cli("--archive", archive_dir, "config", "set", "acse_timeout", "7.5").returncode == 0
    assert "acse_timeout = 7.5" in (archive_dir / "pacsctl.toml").read_text()


def test_a_stale_pid_file_names_no_node(archive_dir):
    """serve.pid left by a killed node, its pid since taken by another program (here this
    test's own process): `config set` does not send anyone to `kill -HUP` it."""
    import os

    assert run_cli("--archive", archive_dir, "config", "set", "allow", "A").returncode == 0
    (archive_dir / "serve.pid").write_text(f"{os.getpid()}\n")
    out = run_cli("--archive", archive_dir, "config", "set", "allow", "B")
    assert out.returncode == 0 and "kill -HUP" not in out.stderr
