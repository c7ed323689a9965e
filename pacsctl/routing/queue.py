"""One route's outbox, read side: what is pending, delivered, dead; the forwarder's log.

The writers' journals (`archive.outbox`) say what was queued. What became of each entry is the
route's log, `outbox/ROUTE/log.ndjson`: append-only lines `{"k": key, "s": state, "n": attempts,
"at": next try, "why": reason}`, each line the entry's whole state (so reading a line twice is
harmless), appended under the route's lock and fdatasynced before anything counts as done. A
line "delivered" is written only after the destination confirmed the instance.

Compaction deletes a journal once its writer has gone and all its entries are settled
(delivered, dropped or cancelled), then rewrites the log without their lines (atomically, under
the lock); the log keeps the count of what it forgot (`{"delivered_before": N}`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pacsctl.archive.outbox import QUEUE, route_dir
from pacsctl.storage import files

LOG_NAME = "log.ndjson"
LOCK_NAME = "lock"


class EntryState(StrEnum):
    """Where an outbox entry stands."""

    WAITING = "waiting"  # queued; its writer has not said yet whether the instance was stored
    PENDING = "pending"  # to be delivered (maybe after a failed attempt, see `attempts`)
    DELIVERED = "delivered"  # the destination confirmed it
    DEAD = "dead"  # refused `max_attempts` times: a dead letter, until `route retry`
    DROPPED = "dropped"  # never stored (a duplicate, a kept conflict, a writer that died first)


SETTLED = (EntryState.DELIVERED, EntryState.DROPPED)


@dataclass
class Entry:
    """One instance queued for one route."""

    key: str  # journal stem / intent id: unique in the route
    journal: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    path: str  # relative to the archive root
    size: int
    sha256: str
    queued_at: float
    state: EntryState = EntryState.WAITING
    attempts: int = 0
    next_try: float = 0.0
    reason: str = ""

    def record(self) -> dict[str, Any]:
        """The entry as a status record (UIDs only: no patient data)."""
        return {
            "SOPInstanceUID": self.sop_instance_uid,
            "StudyInstanceUID": self.study_uid,
            "SeriesInstanceUID": self.series_uid,
            "state": str(self.state),
            "attempts": self.attempts,
            "reason": self.reason,
            "queued_at": self.queued_at,
        }


@dataclass
class _Journal:
    path: Path
    offset: int = 0
    keys: list[str] = field(default_factory=list)
    sealed: bool = False


class RouteQueue:
    """The outbox of one route as this process has read it so far (`refresh` reads more)."""

    def __init__(self, root: Path, name: str) -> None:
        self.root, self.name = root, name
        self.dir = route_dir(root, name)
        self.entries: dict[str, Entry] = {}
        self.delivered_before = 0  # delivered entries compacted away
        self._journals: dict[str, _Journal] = {}
        self._log_offset = 0
        self._log_inode: int | None = None
        self._states: dict[str, dict[str, Any]] = {}  # log lines for entries not read yet
        self.last_queued = 0.0  # when the newest intent read so far was queued

    # -- reading -----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read what writers queued and what the log says since the last call; settle the
        intents of writers that have gone without saying whether they stored."""
        queue = self.dir / QUEUE
        present = set()
        for path in sorted(queue.glob("*.ndjson")) if queue.is_dir() else ():
            present.add(path.stem)
            journal = self._journals.setdefault(path.stem, _Journal(path))
            self._read_journal(journal)
        for stem in set(self._journals) - present:  # compacted by another process
            for key in self._journals.pop(stem).keys:
                self.entries.pop(key, None)
        self._read_log()
        sealed = []
        for journal in self._journals.values():
            if not journal.sealed and _sealed(journal.path):
                journal.sealed = True
                self._read_journal(journal)  # its last lines, written before it was sealed
                sealed.append(journal)
        self._settle_orphans(sealed)

    def _read_journal(self, journal: _Journal) -> None:
        try:
            with open(journal.path, "rb") as fh:
                fh.seek(journal.offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1  # a torn last line is read once it is whole
        journal.offset += end
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "id" in rec:
                key = f"{journal.path.stem}/{rec['id']}"
                entry = Entry(
                    key,
                    journal.path.stem,
                    str(rec.get("SOPInstanceUID", "")),
                    str(rec.get("StudyInstanceUID", "")),
                    str(rec.get("SeriesInstanceUID", "")),
                    str(rec.get("path", "")),
                    int(rec.get("size") or 0),
                    str(rec.get("sha256", "")),
                    float(rec.get("t") or 0.0),
                )
                self.entries[key] = entry
                journal.keys.append(key)
                self.last_queued = max(self.last_queued, entry.queued_at)
                state = self._states.pop(key, None)
                if state is not None:
                    _apply(entry, state)
            elif "ok" in rec or "cancel" in rec:
                ok = "ok" in rec
                key = f"{journal.path.stem}/{rec['ok' if ok else 'cancel']}"
                known = self.entries.get(key)
                if known is not None and known.state is EntryState.WAITING:
                    known.state = EntryState.PENDING if ok else EntryState.DROPPED

    def _read_log(self) -> None:
        path = self.dir / LOG_NAME
        try:
            with open(path, "rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                if inode != self._log_inode:  # rewritten by a compaction: read it afresh
                    self._log_inode, self._log_offset = inode, 0
                fh.seek(self._log_offset)
                data = fh.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "delivered_before" in rec:
                self.delivered_before = int(rec["delivered_before"])
                continue
            entry = self.entries.get(rec.get("k", ""))
            if entry is None:
                self._states[rec.get("k", "")] = rec  # its journal line comes later
            else:
                _apply(entry, rec)

    def _settle_orphans(self, journals: list[_Journal]) -> None:
        """Intents of a writer that died before it said what became of them: the archived file
        decides (the one the intent names: it goes; none, or another: dropped)."""
        updates = []
        for journal in journals:
            for key in journal.keys:
                entry = self.entries[key]
                if entry.state is not EntryState.WAITING:
                    continue
                try:
                    same = files.sha256_file(self.root / entry.path)[1] == entry.sha256
                except OSError:
                    same = False
                if same:
                    updates.append((entry, EntryState.PENDING, 0, 0.0, ""))
                else:
                    updates.append((entry, EntryState.DROPPED, 0, 0.0, "never stored"))
        if updates:
            self.record(updates)

    # -- views -------------------------------------------------------------------------------

    def due(self, now: float, delay: float, ignore_next_try: bool = False) -> list[Entry]:
        """Pending entries whose next try has come (or all, `ignore_next_try`), whose series
        has been quiet `delay` s, oldest first."""
        last: dict[str, float] = {}
        if delay > 0:
            for entry in self.entries.values():
                if entry.state is not EntryState.DROPPED:
                    last[entry.series_uid] = max(last.get(entry.series_uid, 0.0), entry.queued_at)
        out = [
            e
            for e in self.entries.values()
            if e.state is EntryState.PENDING
            and (ignore_next_try or e.next_try <= now)
            and (delay <= 0 or now - last.get(e.series_uid, 0.0) >= delay)
        ]
        out.sort(key=lambda e: (e.queued_at, e.key))
        return out

    def next_event(self, now: float, delay: float) -> float | None:
        """When the next pending entry becomes due (None: nothing pending)."""
        times = []
        last: dict[str, float] = {}
        for entry in self.entries.values():
            if entry.state is not EntryState.DROPPED:
                last[entry.series_uid] = max(last.get(entry.series_uid, 0.0), entry.queued_at)
        for entry in self.entries.values():
            if entry.state is EntryState.PENDING:
                times.append(max(entry.next_try, last.get(entry.series_uid, 0.0) + delay))
        return min(times) if times else None

    def counts(self) -> dict[str, int]:
        """Entries per state (cancelled and dropped ones are not counted)."""
        out = {str(s): 0 for s in (EntryState.WAITING, EntryState.PENDING, EntryState.DELIVERED)}
        out[str(EntryState.DEAD)] = 0
        for entry in self.entries.values():
            if entry.state is not EntryState.DROPPED:
                out[str(entry.state)] += 1
        out[str(EntryState.DELIVERED)] += self.delivered_before
        out["failing"] = sum(1 for e in self.entries.values() if e.state is EntryState.PENDING and e.attempts)
        return out

    def dead(self) -> list[Entry]:
        """The dead letters, oldest first."""
        return sorted(
            (e for e in self.entries.values() if e.state is EntryState.DEAD),
            key=lambda e: (e.queued_at, e.key),
        )

    def oldest_pending(self) -> float | None:
        """When the oldest entry still to be delivered was queued."""
        times = [
            e.queued_at for e in self.entries.values() if e.state in (EntryState.PENDING, EntryState.WAITING)
        ]
        return min(times) if times else None

    # -- writing -----------------------------------------------------------------------------

    def record(self, updates: list[tuple[Entry, EntryState, int, float, str]]) -> None:
        """Append the entries' new states to the log, durably, then take them in."""
        if not updates:
            return
        lines = b"".join(
            json.dumps(
                {"k": e.key, "s": str(s), "n": n, "at": round(at, 3), "why": why},
                separators=(",", ":"),
            ).encode()
            + b"\n"
            for e, s, n, at, why in updates
        )
        files.ensure_dir(self.dir)
        with self.locked():
            fd = os.open(self.dir / LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, files.FILE_MODE)
            try:
                view = memoryview(lines)
                while view:
                    view = view[os.write(fd, view) :]
                os.fdatasync(fd)
            finally:
                os.close(fd)
        for entry, state, attempts, at, why in updates:
            entry.state, entry.attempts, entry.next_try, entry.reason = state, attempts, at, why

    def retry_dead(self) -> int:
        """Queue every dead letter again (attempts start over). Returns how many."""
        self.refresh()
        dead = self.dead()
        self.record([(e, EntryState.PENDING, 0, 0.0, "") for e in dead])
        return len(dead)

    def compact(self) -> int:
        """Delete the journals whose writer has gone and whose entries are all settled, and
        drop their lines from the log. Returns the number of journals deleted."""
        done = [
            stem
            for stem, j in self._journals.items()
            if j.sealed and all(self.entries[k].state in SETTLED for k in j.keys)
        ]
        if not done:
            return 0
        with self.locked():
            self._read_log()  # lines others appended (a retry) are kept
            forgotten = set()
            for stem in done:
                forgotten.update(self._journals[stem].keys)
            delivered = self.delivered_before + sum(
                1 for k in forgotten if self.entries[k].state is EntryState.DELIVERED
            )
            kept = [
                {"k": e.key, "s": str(e.state), "n": e.attempts, "at": e.next_try, "why": e.reason}
                for e in self.entries.values()
                if e.key not in forgotten and e.state is not EntryState.WAITING
            ]
            data = b"".join(
                json.dumps(line, separators=(",", ":")).encode() + b"\n"
                for line in [{"delivered_before": delivered}, *kept]
            )
            # The journals go first: stopped between the two, the log still holds lines of
            # entries that no longer exist (forgotten at the next compaction). The other order
            # would leave journals whose delivered entries the log had forgotten: sent again.
            for stem in done:
                self._journals[stem].path.unlink(missing_ok=True)
            files.fsync_dir(self.dir / QUEUE)
            files.write_atomic(self.root / "tmp", self.dir / LOG_NAME, data)
            for stem in done:
                for key in self._journals.pop(stem).keys:
                    self.entries.pop(key, None)
            self.delivered_before = delivered
            self._log_inode = os.stat(self.dir / LOG_NAME).st_ino
            self._log_offset = len(data)
        return len(done)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The route's lock: appends to its log and its compaction exclude each other."""
        files.ensure_dir(self.dir)
        fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, files.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _apply(entry: Entry, rec: dict[str, Any]) -> None:
    try:
        entry.state = EntryState(rec.get("s", "pending"))
    except ValueError:
        return
    entry.attempts = int(rec.get("n") or 0)
    entry.next_try = float(rec.get("at") or 0.0)
    entry.reason = str(rec.get("why") or "")


def _sealed(path: Path) -> bool:
    """Whether a journal's writer has gone (sealed it, or died): nobody holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def now() -> float:
    """Wall-clock time, as the queue's times are (they survive restarts)."""
    return time.time()
