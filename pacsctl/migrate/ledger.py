"""The migration ledger: per SOURCE/DEST pair, the state of every study, in the archive.

One append-only NDJSON journal per pair (`ARCHIVE/migrations/SRC--DEST.ndjson`), each line the
whole new state of one study, fsynced before the write returns: a line that is in the file is
durable, the last line wins, and a line torn by a crash or power loss (the only one that can
be: appends are sequential) is dropped on reading. When the journal holds many superseded
lines it is rewritten with the archive's atomic write (temp file, fsync, rename, fsync of the
folder). The ledger holds PatientID (for `--phi` reports): it is private like the archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pacsctl.storage import files

LEDGER_DIR = "migrations"
_COMPACT_FACTOR = 4  # rewrite once the journal holds this many lines per study (and >= 1000)


class StudyState(StrEnum):
    """Where a study stands in a migration."""

    PENDING = "pending"  # not (yet) proven at DEST
    DONE = "done"  # DEST answered every SOP Instance UID the source listed
    FAILED = "failed"  # a permanent failure, or transient ones past the attempt limit


def now() -> str:
    """A timestamp for the ledger (UTC, ISO 8601, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StudyEntry:
    """One study's state; what the ledger journals and `--status` shows."""

    StudyInstanceUID: str
    status: StudyState = StudyState.PENDING
    reason: str | None = None
    source_instances: int | None = None  # as the source last listed (or counted) them
    dest_instances: int | None = None  # of those, what DEST answered at the last check
    attempts: int = 0  # transfers tried, over every run
    PatientID: str = ""  # shown only with --phi
    StudyDate: str = ""
    first_seen: str = ""
    updated: str = ""
    done_at: str | None = None
    committed: bool | None = None  # --commit: DEST's Storage Commitment report covered every instance

    def as_record(self, phi: bool = False) -> dict[str, Any]:
        """The per-study JSON record of `migrate --json` and `--status --json`."""
        record = asdict(self)
        record["status"] = str(self.status)
        if not phi:
            del record["PatientID"]
        return record

    def changed(self, **changes: Any) -> StudyEntry:
        """A copy with `changes` and a new `updated` time."""
        return replace(self, **changes, updated=now())


_FIELDS = {f.name for f in fields(StudyEntry)}


def _entry(raw: dict[str, Any]) -> StudyEntry:
    known = {k: v for k, v in raw.items() if k in _FIELDS}
    known["status"] = StudyState(known.get("status", StudyState.PENDING))
    return StudyEntry(**known)


def pair_name(source_aet: str, dest_aet: str) -> str:
    """The ledger's file name stem for a SOURCE/DEST pair (AE titles: hosts may move)."""
    return f"{_safe(source_aet)}--{_safe(dest_aet)}"


def _safe(aet: str) -> str:
    """An AE title as a file name: letters, digits, - and _ as they are; any other character
    makes it `_`, and a hash of the title keeps such names apart."""
    plain = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in aet.strip())
    if plain == aet.strip():
        return plain
    return f"{plain}_{hashlib.sha1(aet.encode()).hexdigest()[:8]}"


class Ledger:
    """The durable per-study state of one migration pair. Thread-safe."""

    def __init__(self, path: Path, tmp_dir: Path) -> None:
        self.path = path
        self.tmp_dir = tmp_dir
        self._lock = threading.Lock()
        self._entries: dict[str, StudyEntry] = {}
        self._lines = 0
        self._load()

    @classmethod
    def open(cls, archive_root: Path, source_aet: str, dest_aet: str, create: bool = True) -> Ledger:
        """The ledger of SOURCE/DEST in the archive at `archive_root` (its folder made if
        `create`; without it a missing ledger reads as empty)."""
        folder = archive_root / LEDGER_DIR
        if create:
            files.ensure_dir(folder)
        return cls(folder / f"{pair_name(source_aet, dest_aet)}.ndjson", archive_root / "tmp")

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                entry = _entry(json.loads(line))
            except (ValueError, TypeError):
                continue  # torn by a crash mid-append: that update never returned
            self._entries[entry.StudyInstanceUID] = entry
            self._lines += 1
        if data and not data.endswith(b"\n"):
            self._rewrite()  # no torn tail left for the next append to extend

    def get(self, study_uid: str) -> StudyEntry | None:
        """The study's state, or None when the ledger has never seen it."""
        return self._entries.get(study_uid)

    def entries(self) -> list[StudyEntry]:
        """Every study, in the order first seen."""
        return list(self._entries.values())

    def __iter__(self) -> Iterator[StudyEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: StudyEntry, durable: bool = True) -> None:
        """Record one study's new state durably (returns once it is on disk); `durable` False
        leaves the fsync to the next durable write (a crash may lose this line, only this)."""
        self.put_many([entry], durable)

    def put_many(self, entries: Iterable[StudyEntry], durable: bool = True) -> None:
        """Record new states with one fsync for all of them (none if not `durable`)."""
        batch = list(entries)
        if not batch:
            return
        payload = b"".join(
            json.dumps(asdict(e), ensure_ascii=False, default=str).encode() + b"\n" for e in batch
        )
        with self._lock:
            new_file = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, files.FILE_MODE)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                if durable:
                    os.fsync(fd)  # also makes earlier non-durable lines durable
            finally:
                os.close(fd)
            if new_file:
                files.fsync_dir(self.path.parent)
            for entry in batch:
                self._entries[entry.StudyInstanceUID] = entry
            self._lines += len(batch)
            if self._lines >= max(1000, _COMPACT_FACTOR * len(self._entries)):
                self._rewrite()

    def _rewrite(self) -> None:
        """Replace the journal by one line per study, atomically."""
        payload = b"".join(
            json.dumps(asdict(e), ensure_ascii=False, default=str).encode() + b"\n"
            for e in self._entries.values()
        )
        files.ensure_dir(self.tmp_dir)
        files.write_atomic(self.tmp_dir, self.path, payload)
        self._lines = len(self._entries)

    def counts(self) -> dict[str, int]:
        """`studies`, `done`, `pending`, `failed`: the summary of `--status`."""
        out = {"studies": len(self._entries)} | {str(s): 0 for s in StudyState}
        for entry in self._entries.values():
            out[str(entry.status)] += 1
        return out
