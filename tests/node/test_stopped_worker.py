"""A serve worker stopped (SIGSTOP) or wedged must not take a new association down with it: the
other worker answers (real processes, real sockets on loopback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pacsctl.config import Node
from pacsctl.net import scu
from tests.helpers import serve_workers
from tests.node.test_stopping import GroupServe, _no_node_outlives_its_test  # noqa: F401


def _threads(pid: int) -> list[int]:
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def _holder(client: socket.socket, workers: list[int], timeout: float) -> int | None:
    """The worker that accepted `client`'s connection (its socket's inode among the worker's
    descriptors), or None if none did within `timeout` seconds."""
    port = client.getsockname()[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port:  # the server side: remote is our port
                inodes.add(f"socket:[{fields[9]}]")
        for pid in workers:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if os.readlink(fd) in inodes:
                        return pid
                except OSError:
                    continue
        time.sleep(0.005)
    return None


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to starve one thread")
def test_a_stopped_worker_never_takes_the_next_connection(tmp_path: Path) -> None:
    """`kill(SIGSTOP)` flags one thread of the process, the main one; the others run on until
    it gets a CPU and stops them. Here its main thread is starved (SCHED_IDLE, on a CPU a busy
    loop holds) while its other threads have the other CPU: the window a loaded CI machine
    opened now and then is held open. A worker accepting in a thread of its own took
    connections in that window, and froze with them when the stop came between accepting and
    answering: the C-ECHO that failed in CI (before the fix 4 of 4 runs failed, two with the
    stopped worker holding the connection, two with the C-ECHO unanswered for 10 s).
    Accepting in the main thread, it stops before it can take one."""
    node = GroupServe(tmp_path / "archive", tmp_path / "serve.log", "--workers", "2")
    target = Node("n", "PACSCTL", "127.0.0.1", node.port)
    deadline = time.monotonic() + 30
    while len(node.workers()) < 2 or min(len(_threads(pid)) for pid in node.workers()) < 3:
        assert time.monotonic() < deadline, node.stderr()  # main, heartbeat, accept/signals
        time.sleep(0.05)
    stopped, other = workers = node.workers()
    cpus = sorted(os.sched_getaffinity(0))
    starved, free = cpus[0], cpus[1]
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(burner.pid, {starved})
        for _ in range(5):
            for tid in _threads(stopped):
                os.sched_setaffinity(tid, {starved} if tid == stopped else {free})
            os.sched_setscheduler(stopped, os.SCHED_IDLE, os.sched_param(0))
            os.kill(stopped, signal.SIGSTOP)
            with socket.create_connection(("127.0.0.1", node.port)) as client:
                assert _holder(client, workers, timeout=5) == other
            started = time.monotonic()
            assert scu.echo(target, timeout=10) >= 0, node.stderr()  # the other worker answers
            assert time.monotonic() - started < 5
            os.kill(stopped, signal.SIGCONT)
            time.sleep(0.2)
    finally:
        burner.kill()
        burner.wait()
        try:
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert serve_workers(node.proc.pid) == node.workers()
    node.proc.send_signal(signal.SIGTERM)
    assert node.wait(20) == 0, node.stderr()
