"""An exclusive lock on a folder that names its holder: one writer at a time (backup, restore).

`flock` on a lock file, held for the whole run: the kernel drops it when the process ends, however
it ends (kill -9 too), so a lock is never stale. The holder writes who it is (pid, host, start,
what) into the file after taking the lock, so a refused second run can say whom it waits for.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from pacsctl.errors import PacsctlError
from pacsctl.storage import files

WAIT_POLL_SECONDS = 0.2  # how often a waiting run tries the lock again (Ctrl-C stays immediate)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: what it runs, its pid and host, and since when (UTC, ISO 8601)."""

    what: str = ""
    pid: int = 0
    host: str = ""
    started: str = ""

    @classmethod
    def me(cls, what: str) -> LockHolder:
        """This process, starting now."""
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return cls(what, os.getpid(), socket.gethostname(), now)

    @classmethod
    def parse(cls, data: bytes) -> LockHolder | None:
        """A holder from a lock file's bytes; None when empty or unreadable (an older pacsctl)."""
        try:
            record = json.loads(data)
            return cls(str(record["what"]), int(record["pid"]), str(record["host"]), str(record["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def encode(self) -> bytes:
        """The lock file's bytes."""
        return (json.dumps(asdict(self)) + "\n").encode("utf-8")

    def describe(self) -> str:
        """`backup (pid 1234 on host, since 2026-12-01T15:00:00+00:00)` for people."""
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        return f"{self.what or 'another run'} (pid {self.pid}{where}, since {self.started})"


class LockBusy(PacsctlError):
    """Another run holds the lock (exit 1); `holder` says who, when it could be read."""

    def __init__(self, resource: str, holder: LockHolder | None, hint: str | None = None) -> None:
        who = holder.describe() if holder else "another pacsctl run"
        super().__init__(f"{resource} is in use by {who}", hint)
        self.resource = resource
        self.holder = holder


@contextmanager
def exclusive(
    lock_path: Path,
    what: str,
    *,
    resource: str,
    wait: bool = False,
    on_wait: Callable[[LockHolder | None], None] = lambda holder: None,
    hint: str | None = "wait for it to finish, or give --wait",
) -> Iterator[None]:
    """Hold the flock on `lock_path` (created if needed) for the block, as `what`.

    Busy: a LockBusy at once naming the holder, or with `wait` a wait (on_wait is called once
    with the holder). A read-only folder (media, a snapshot) is not locked: nobody writes it. File
    systems without locks (some network mounts) go on unlocked.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, files.FILE_MODE)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        yield
        return
    try:
        if _take(fd, lock_path, resource, wait, on_wait, hint):
            data = LockHolder.me(what).encode()
            os.pwrite(fd, data, 0)  # then cut: a reader never sees an empty file
            os.ftruncate(fd, len(data))
        yield
    finally:
        os.close(fd)  # drops the flock; the file stays (removing it would race the next holder)


def _take(
    fd: int,
    lock_path: Path,
    resource: str,
    wait: bool,
    on_wait: Callable[[LockHolder | None], None],
    hint: str | None,
) -> bool:
    """Take the flock; False when the file system has none (then the run goes on unlocked)."""
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            holder = read_holder(lock_path)
            if not wait:
                raise LockBusy(resource, holder, hint) from None
            if not told:
                on_wait(holder)
                told = True
            time.sleep(WAIT_POLL_SECONDS)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            return False


def read_holder(lock_path: Path) -> LockHolder | None:
    """Who holds (or last held) the lock at `lock_path`, as it wrote itself there."""
    try:
        return LockHolder.parse(lock_path.read_bytes())
    except OSError:
        return None
