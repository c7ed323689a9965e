"""The archive's audit trail: one JSON object per line in `ARCHIVE/audit.log`.

Records say who did what when (event, AE titles, peer address, UIDs, status; for commands run
from the command line the OS user and the command) and never hold patient names or IDs. Several
processes may append at once: each record is one `write()` on an O_APPEND descriptor, which the
kernel keeps whole for regular files. Statuses are written as hex strings ("0xB000"); records
of older versions hold them as numbers, and readers accept both.
"""

from __future__ import annotations

import collections
import getpass
import itertools
import json
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pacsctl.dicom.identifying import PATIENT_IDENTIFYING
from pacsctl.errors import UsageError

LOG = logging.getLogger(__name__)
FILE_MODE = 0o600


class AuditEvent(StrEnum):
    """The `event` of an audit record (`pacsctl audit --event`)."""

    # Written by `serve`, one per association event or service request of a peer.
    ASSOCIATE = "associate"
    REJECT = "reject"  # an association refused by the node (allow-list, AE title, limits)
    RELEASE = "release"
    ABORT = "abort"
    REFUSE = "refuse"  # a connection dropped before any association (too many, hostile)
    STORE = "store"
    FIND = "find"
    MOVE = "move"
    GET = "get"
    # Written by commands run from the command line (with the OS user and the command).
    IMPORT = "import"
    SEND = "send"
    RETRIEVE = "retrieve"  # `pacsctl move` / `pacsctl get`
    BACKUP = "backup"
    REPAIR = "repair"  # `pacsctl verify --repair-from`
    RESTORE = "restore"  # `pacsctl restore` (whole or part)
    EXPORT = "export"
    VERIFY = "verify"  # `pacsctl verify` of the archive (not of a backup): what `show` reports
    ANONYMIZE = "anonymize"  # `pacsctl anonymize` reading from or storing into the archive
    # Written by `serve --web-port`, one per DICOMweb request (token id, peer, path, status).
    WEB = "web"


# Keys that must never reach the audit log, whatever a caller passes.
_FORBIDDEN = PATIENT_IDENTIFYING

# One encoder for every record (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def status_text(status: Any) -> Any:
    """A DIMSE status as written to the log: "0xB000" for a number, anything else unchanged."""
    if isinstance(status, int) and not isinstance(status, bool):
        return f"0x{status:04X}"
    return status


class AuditLog:
    """Appends audit records to one NDJSON file; thread-safe, multi-process safe."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (adds `time` when missing). Patient identifiers are dropped."""
        clean = {k: v for k, v in record.items() if k not in _FORBIDDEN}
        if "status" in clean:
            clean["status"] = status_text(clean["status"])
        clean.setdefault("time", datetime.now(UTC).isoformat(timespec="milliseconds"))
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
    now = now or datetime.now(UTC)
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
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
            if not isinstance(record, dict):
                continue
            if "status" in record:  # older records hold the status as a number
                record["status"] = status_text(record["status"])
            if since is not None:
                try:
                    when = datetime.fromisoformat(str(record.get("time", "")))
                except ValueError:
                    continue
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                if when < since:
                    continue
            yield record


# -- reading with filters ------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    """Which records `pacsctl audit` shows; every given condition must hold."""

    since: datetime | None = None
    event: AuditEvent | None = None
    calling_aet: str | None = None
    uid: str | None = None

    def matches(self, record: Mapping[str, Any]) -> bool:
        """True when `record` meets every condition of the query."""
        if self.event is not None and record.get("event") != self.event.value:
            return False
        if self.calling_aet is not None and str(record.get("calling_aet", "")).strip() != self.calling_aet:
            return False
        return self.uid is None or self.uid in _uids_of(record)


def _uids_of(record: Mapping[str, Any]) -> set[str]:
    """Every UID a record names: values of keys ending in "UID" or "uids", lists included."""
    found: set[str] = set()
    for key, value in record.items():
        if not (key.endswith("UID") or key.endswith("uids")):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                found.add(item)
    return found


def select_records(
    path: Path, query: AuditQuery, limit: int | None = None, tail: int | None = None
) -> list[dict[str, Any]]:
    """The records of the log at `path` that match `query`, oldest first: at most the first
    `limit` of them, or the last `tail`."""
    matching = (r for r in read_audit(path, query.since) if query.matches(r))
    if tail is not None:
        return list(collections.deque(matching, maxlen=tail)) if tail > 0 else []
    if limit is not None:
        return list(itertools.islice(matching, limit))
    return list(matching)


# -- actions run from the command line -----------------------------------------------------------

# Filter values that cannot identify anyone may stay in a recorded command line (UIDs, dates
# of studies, modalities); every other `-k KEY=VALUE` value is replaced by this.
REDACTED = "…"
_SAFE_VRS = frozenset({"UI", "DA", "TM", "DT", "CS", "IS", "US", "UL"})
_KEY_OPTIONS = ("-k", "--key")


def _is_safe_filter(key: str) -> bool:
    from pydicom.datadict import dictionary_VR

    from pacsctl.dicom.matching import resolve_keyword

    try:
        keyword = resolve_keyword(key)
        vr = str(dictionary_VR(keyword)).split(" or ")[0]
    except (UsageError, KeyError):
        return False  # not a keyword we know: its value could be anything
    return keyword not in PATIENT_IDENTIFYING and vr in _SAFE_VRS


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line fit for the audit log: values of `-k KEY=VALUE` filters that could
    identify a patient (names, IDs, birth dates, free text) become "…"."""
    out: list[str] = []
    after_key_option = False
    for token in argv:
        prefix, rest = "", token
        for option in ("--key=", "-k"):
            if token.startswith(option) and token != option and "=" in token[len(option) :]:
                prefix, rest = option, token[len(option) :]
                break
        key, sep, _ = rest.partition("=")
        is_filter = sep and (after_key_option or prefix or not key.startswith("-"))
        if is_filter and not _is_safe_filter(key):
            token = f"{prefix}{key}={REDACTED}"
        elif after_key_option and not sep:
            token = REDACTED  # a malformed filter: it may be a bare value
        out.append(token)
        after_key_option = token in _KEY_OPTIONS
    return out


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the numeric uid
        return str(os.getuid())


def record_action(
    archive_root: Path,
    event: AuditEvent,
    summary: Mapping[str, Any],
    *,
    uids: Iterable[str] = (),
    selection: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    **details: Any,
) -> None:
    """Append who ran which command and what came of it: the OS user, the command line
    (filters redacted, see `redact_argv`), the summary's counts and status, `uids` and the
    UIDs among the `selection`'s filters, and `details` (node, destination, AE titles).
    Nothing is written when `archive_root` holds no archive (none is created for it); a log
    that cannot be written is a warning, never a failure of the command that did the work."""
    from pacsctl.archive.archive import AUDIT_LOG
    from pacsctl.config import CONFIG_NAME

    root = Path(archive_root)
    if not (root / CONFIG_NAME).is_file():
        return
    record: dict[str, Any] = {
        "event": event.value,
        "user": _os_user(),
        "pid": os.getpid(),
        "command": " ".join(["pacsctl", *redact_argv(sys.argv[1:] if argv is None else argv)]),
    }
    record.update({k: v for k, v in details.items() if v is not None})
    for key, value in summary.items():
        if key == "status" or (isinstance(value, int) and not isinstance(value, bool)):
            record[key] = value
    selected = [u for k, v in (selection or {}).items() if k.endswith("UID") for u in v.split("\\") if u]
    uid_list = list(dict.fromkeys([*uids, *selected]))
    if uid_list:
        record["uids"] = uid_list
    log = AuditLog(root / AUDIT_LOG)
    try:
        log.append(record)
        log.close()
    except OSError as exc:
        LOG.warning("cannot write the audit log %s: %s", root / AUDIT_LOG, exc.strerror or exc)
