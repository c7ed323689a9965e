"""The write side of the routes' outboxes: what the ingest queues for forwarding.

Each route has its outbox under `ARCHIVE/outbox/ROUTE/`. Every writing process appends to its
own journal there (`queue/<pid>-<id>.ndjson`, locked while the process lives, like the index
journals), so queuing costs one `write` per batch and route, never a database rewrite.

A batch writes two kinds of lines, both carried by the ingest's own durability barriers:

- an *intent* per instance that may be stored (`{"id", "SOPInstanceUID", "path", "sha256", ...}`),
  appended before the barrier that makes the instance's data durable, so no instance can be
  named (and acknowledged) without its intent on disk;
- once named, an *outcome* per intent (`{"ok": id}` stored, `{"cancel": id}` a duplicate, a kept
  conflict or a failed batch), made durable by the barrier that makes the names durable.

An intent without an outcome whose writer died is settled by the reader from the file itself
(`routing.queue`): forwarded when the archived file is the one the intent names, dropped when
there is no such file (the writer died before naming it; the store was never acknowledged).
A crash can therefore forward an instance twice (at least once), never lose one.
The read side (the forwarder, its delivered / dead-letter log) is `pacsctl.routing`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsctl.config import Route
from pacsctl.dicom.matching import RecordFilter, compile_filters
from pacsctl.errors import UsageError
from pacsctl.storage.files import FILE_MODE, ensure_dir, fsync_dir

OUTBOX = "outbox"
QUEUE = "queue"
ROTATE_AFTER = 4096  # intents per journal: a full one is sealed once its outcomes are written,
# so a node that runs for months leaves journals the forwarder can compact, not one that grows
ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# What an intent carries: enough to send the file and to wait for a quiet series; no patient data.
ENTRY_KEYS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "path",
    "size",
    "sha256",
)


def validate_route_name(name: str) -> str:
    """`name` if it can name a route (and its outbox folder), else UsageError."""
    if not ROUTE_NAME.match(name):
        raise UsageError(f"invalid route name {name!r}", hint="letters, digits, '.', '_' and '-', at most 64")
    return name


def route_dir(root: Path, name: str) -> Path:
    """The outbox folder of route `name` in the archive at `root`."""
    return root / OUTBOX / validate_route_name(name)


@dataclass
class _Journal:
    fd: int
    path: Path
    intents: int = 0  # written into it
    open: int = 0  # of those, still without an outcome


class OutboxWriter:
    """This process's outbox journals, one per route. Thread-safe (stores of concurrent
    associations queue from their own threads)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._current: dict[str, _Journal] = {}  # route -> the journal intents go to
        self._retiring: dict[str, _Journal] = {}  # full journals waiting for outcomes, by stem
        self._serial = 0
        self._compiled: tuple[dict[str, Route], dict[str, RecordFilter]] = ({}, {})

    def intents(
        self, routes: Mapping[str, Route], records: Iterable[dict[str, Any]]
    ) -> tuple[dict[int, list[tuple[str, str]]], set[Path]]:
        """Queue an intent per record and matching route. Returns, per record position, its
        (route, entry key) pairs (the key: journal stem / intent id), and the journals written
        (to make durable)."""
        records = list(records)
        filters = self._filters(routes)
        if not filters or not records:
            return {}, set()
        now = round(time.time(), 3)
        queued: dict[int, list[tuple[str, str]]] = {}
        written: set[Path] = set()
        with self._lock:
            for name, flt in filters.items():
                lines = []
                journal = self._journal(name)
                stem = journal.path.stem
                for n, rec in enumerate(records):
                    if not flt.matches(rec):
                        continue
                    entry_id = self._next_id()
                    entry = {"id": entry_id, "t": now, **{k: rec.get(k, "") for k in ENTRY_KEYS}}
                    lines.append(entry)
                    queued.setdefault(n, []).append((name, f"{stem}/{entry_id}"))
                if lines:
                    self._append(journal, lines)
                    journal.intents += len(lines)
                    journal.open += len(lines)
                    written.add(journal.path)
        return queued, written

    def outcomes(self, settled: Iterable[tuple[str, str, bool]]) -> set[Path]:
        """Record each intent's outcome, (route, entry key, stored), in the journal holding the
        intent. Returns the journals written."""
        by_journal: dict[str, list[dict[str, str]]] = {}
        for _name, key, stored in settled:
            stem, _, entry_id = key.rpartition("/")
            by_journal.setdefault(stem, []).append({"ok" if stored else "cancel": entry_id})
        written: set[Path] = set()
        with self._lock:
            journals = {j.path.stem: j for j in [*self._current.values(), *self._retiring.values()]}
            for stem, lines in by_journal.items():
                journal = journals.get(stem)
                if journal is None:  # sealed already (closed): the reader settles by the file
                    continue
                self._append(journal, lines)
                written.add(journal.path)
                journal.open -= len(lines)
                if stem in self._retiring and journal.open <= 0:
                    os.close(self._retiring.pop(stem).fd)  # full and settled: sealed
        return written

    def close(self) -> None:
        """Seal this process's journals (their locks go: readers may settle and delete them)."""
        with self._lock:
            for journal in [*self._current.values(), *self._retiring.values()]:
                os.close(journal.fd)
            self._current.clear()
            self._retiring.clear()

    def _filters(self, routes: Mapping[str, Route]) -> dict[str, RecordFilter]:
        """Compiled filters of `routes`, recompiled only when the routes changed (SIGHUP)."""
        known, compiled = self._compiled
        if known != routes:
            compiled = {name: compile_filters(route.match) for name, route in routes.items()}
            self._compiled = (dict(routes), compiled)
        return compiled

    def _next_id(self) -> str:
        # Unique within this process's journals; the reader keys entries by journal and id.
        self._serial += 1
        return f"{self._serial:x}"

    @staticmethod
    def _append(journal: _Journal, lines: list[dict[str, Any]]) -> None:
        fd = journal.fd
        data = b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # a short write (disk full) must not leave half a batch
                view = view[os.write(fd, view) :]
        except BaseException:
            try:
                os.ftruncate(fd, start)  # a torn line would glue onto the next batch's first
            except OSError:
                pass
            raise

    def _journal(self, name: str) -> _Journal:
        current = self._current.get(name)
        if current is not None and current.intents >= ROTATE_AFTER:  # full: a fresh one
            del self._current[name]
            if current.open > 0:
                self._retiring[current.path.stem] = current
            else:
                os.close(current.fd)
        if name not in self._current:
            folder = ensure_dir(route_dir(self.root, name) / QUEUE)
            stem = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            # Created and locked under a name readers ignore, then renamed (as index journals):
            # a reader must never take a fresh journal for one whose writer is gone.
            fresh = folder / f"{stem}.new"
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = folder / f"{stem}.ndjson"
            os.rename(fresh, path)
            fsync_dir(folder)  # once per journal: its name is durable
            self._current[name] = _Journal(fd, path)
        return self._current[name]
