"""A real `pacsctl backup` child held mid-run, deterministically: one archive file is swapped for a
FIFO, so the child blocks opening it (holding its lock) until the test feeds the bytes or kills it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pacsctl.archive.archive import Archive
from tests.helpers import cli_env


def first_file(archive: Archive) -> str:
    """The archive-relative path of the archive's first instance file."""
    return str(sorted(archive.index.iter_instances(), key=lambda r: r["path"])[0]["path"])


class StalledBackup:
    """`python -m pacsctl ARGS` that blocks reading the file `stall` (made a FIFO by `start`)."""

    def __init__(self, stall: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.path = stall
        self.data = self.path.read_bytes()
        self.args, self.env = args, env
        self.child: subprocess.Popen[str] | None = None

    def start(self, holds: Callable[[int], bool], timeout: float = 60) -> int:
        """Start the child; return its pid once `holds(pid)` says it holds the lock."""
        self.path.unlink()
        os.mkfifo(self.path, 0o600)
        self.child = subprocess.Popen(
            [sys.executable, "-m", "pacsctl", *self.args],
            env=cli_env(self.env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + timeout
        while not holds(self.child.pid):
            assert self.child.poll() is None, f"the backup ended early: {self.child.communicate()}"
            assert time.monotonic() < deadline, "the backup never took its lock"
            time.sleep(0.05)
        return self.child.pid

    def feed(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Let the child read the file and finish; the archive gets its real file back."""
        assert self.child is not None
        writer = threading.Thread(target=self._write_fifo, daemon=True)
        writer.start()
        out, err = self.child.communicate(timeout=timeout)
        writer.join(timeout)
        self._restore()
        return subprocess.CompletedProcess(self.child.args, self.child.returncode, out, err)

    def kill(self) -> None:
        """kill -9 the child (blocked, holding its lock); the archive gets its real file back."""
        assert self.child is not None
        os.kill(self.child.pid, signal.SIGKILL)
        self.child.communicate(timeout=30)
        assert self.child.returncode == -signal.SIGKILL
        self._restore()

    def close(self) -> None:
        """Kill a child still running (a failed test) and put the file back."""
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.communicate(timeout=30)
        self._restore()

    def _write_fifo(self) -> None:
        with open(self.path, "wb") as fifo:  # blocks until the child opens it
            fifo.write(self.data)

    def _restore(self) -> None:
        if not self.path.is_fifo() and self.path.exists():
            return
        tmp = self.path.with_name(self.path.name + ".restore")
        tmp.write_bytes(self.data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
