"""`ARCHIVE/serve.pid`: which process serves the archive, so that `config set` can name it for
`kill -HUP`. Light on imports: `pacsctl config set` reads it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

LOG = logging.getLogger(__name__)

PID_FILE = "serve.pid"


def write_pid_file(root: Path, tmp_dir: Path) -> Path:
    """Record this process as the archive's node (a warning, not a failure, if it cannot)."""
    from pacsctl.storage import files

    path = root / PID_FILE
    try:
        files.write_atomic(tmp_dir, path, f"{os.getpid()}\n".encode())
    except OSError as exc:
        LOG.warning("cannot write %s: %s", path, exc.strerror or exc)
    return path


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it still names this process (not another node's)."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def running_node_pid(root: Path) -> int | None:
    """The pid of the `serve` running over the archive at `root`, if one is. A file left by a
    node that was killed may name a pid the system has since given to another program: where
    /proc shows command lines, only a `pacsctl ... serve` counts."""
    try:
        pid = int((root / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return pid
    except (OSError, ValueError):
        return None
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc: trust the file
        return pid
    if b"serve" not in words or not any(b"pacsctl" in w for w in words):
        return None
    return pid
