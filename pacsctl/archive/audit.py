"""The archive's audit trail: one JSON object per line in `ARCHIVE/audit.log`.

Records say who did what when (event, AE titles, peer address, UIDs, status) and never hold
patient names or IDs. Several processes may append at once: each record is one `write()` on
an O_APPEND descriptor, which the kernel keeps whole for regular files.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

from pacsctl.errors import UsageError

FILE_MODE = 0o600


class AuditEvent(StrEnum):
    """The `event` of an audit record (`pacsctl audit --event`)."""

    ASSOCIATE = "associate"
    REJECT = "reject"  # an association refused by the node (allow-list, AE title, limits)
    RELEASE = "release"
    ABORT = "abort"
    REFUSE = "refuse"  # a connection dropped before any association (too many, hostile)
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"

# Keys that must never reach the audit log, whatever a caller passes.
_FORBIDDEN = frozenset({"PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs"})

# One encoder for every record (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


class AuditLog:
    """Appends audit records to one NDJSON file; thread-safe, multi-process safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (adds `time` when missing). Patient identifiers are dropped."""
        clean = {k: v for k, v in record.items() if k not in _FORBIDDEN}
        clean.setdefault("time", datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
        line = _ENCODER.encode(clean) + "\n"
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            os.write(self._fd, line.encode("utf-8"))

    def close(self) -> None:
        """Flush to disk and close the descriptor."""
        with self._lock:
            if self._fd is not None:
                try:
                    os.fsync(self._fd)
                finally:
                    os.close(self._fd)
                    self._fd = None


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """Parse a `--since` value: an ISO date/time (UTC when no zone), or a relative age such as
    `30m`, `12h`, `7d`. Raises UsageError otherwise."""
    now = now or datetime.now(timezone.utc)
    value = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if value[-1:].lower() in units and value[:-1].isdigit():
        return now - timedelta(seconds=int(value[:-1]) * units[value[-1].lower()])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"cannot read {text!r} as a time",
            hint="use an ISO time like 2024-05-01 or 2024-05-01T08:00, or an age like 12h / 7d",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def read_audit(path: Path, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Records of an audit log, oldest first, those at or after `since` when given.
    A torn last line (a writer killed mid-append) is skipped."""
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if since is not None:
                try:
                    when = datetime.fromisoformat(str(record.get("time", "")))
                except ValueError:
                    continue
                if when.tzinfo is None:
                    when = when.replace(tzinfo=timezone.utc)
                if when < since:
                    continue
            yield record
