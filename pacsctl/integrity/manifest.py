"""The backup manifest: what a backup folder holds, so it can be verified and restored alone.

`DEST/backup-manifest.ndjson`, one JSON object per line::

    {"format": "pacsctl-backup-manifest", "version": 1, "created": "...", "instances": N}
    {"SOPInstanceUID": "1.2.3", "path": "objects/ab/cd/1.2.3.dcm", "size": 1234, "sha256": "...",
     "StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.1"}
    ...
    {"end": true, "instances": N}

It is replaced atomically and durably, and only after every file it lists is durable, so it
never lists a file that is not there in full. The closing line tells a complete manifest from
one damaged later (cut short by a failing disk). The same bytes serve an object-store backup
(`integrity/offsite`), where the manifest is one object. Plain NDJSON: `grep`, `jq` and
`sha256sum`-style checks work on it without pacsctl.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from pacsctl.integrity.filecheck import Expected
from pacsctl.storage import files, locks
from pacsctl.storage.locks import LockHolder

MANIFEST_NAME = "backup-manifest.ndjson"
LOCK_NAME = "backup.lock"
FORMAT = "pacsctl-backup-manifest"
VERSION = 1


@dataclass
class Manifest:
    """Entries by archive-relative path, and what was wrong with the file if it was damaged."""

    entries: dict[str, Expected] = field(default_factory=dict)
    created: str = ""
    damage: list[str] = field(default_factory=list)  # human-readable, one per problem


def manifest_path(dest: Path) -> Path:
    """Where a backup folder keeps its manifest."""
    return dest / MANIFEST_NAME


def read_manifest(dest: Path) -> Manifest | None:
    """The manifest of backup folder `dest`, or None when it has none.

    A damaged manifest still yields every entry it can read; `damage` says what was wrong.
    """
    path = manifest_path(dest)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return parse_manifest(data)


def parse_manifest(data: bytes) -> Manifest:
    """A manifest from its bytes; what cannot be read is listed in `damage`."""
    manifest = Manifest()
    ended = header = False
    for number, line in enumerate(data.splitlines(), 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            if record.get("format") == FORMAT:
                header, manifest.created = True, str(record.get("created", ""))
                continue
            if record.get("end"):
                ended = True
                if record.get("instances") != len(manifest.entries):
                    manifest.damage.append(
                        f"closing line counts {record.get('instances')} instances, "
                        f"read {len(manifest.entries)}"
                    )
                continue
            entry = Expected(
                str(record["path"]),
                int(record["size"]),
                str(record["sha256"]),
                str(record.get("SOPInstanceUID", "")),
                str(record.get("StudyInstanceUID", "")),
                str(record.get("SeriesInstanceUID", "")),
            )
        except (ValueError, KeyError, TypeError):
            manifest.damage.append(f"line {number} unreadable")
            continue
        manifest.entries[entry.path] = entry
    if not header:
        manifest.damage.append("no header line")
    if not ended:
        manifest.damage.append("no closing line (cut short)")
    return manifest


def write_manifest(dest: Path, tmp_dir: Path, entries: Iterable[Expected]) -> int:
    """Replace the manifest of `dest` atomically and durably; return the number of entries."""
    ordered = sorted(entries, key=lambda e: e.path)
    files.write_atomic(tmp_dir, manifest_path(dest), encode_manifest(ordered))
    return len(ordered)


def encode_manifest(entries: Iterable[Expected]) -> bytes:
    """The manifest's bytes: header, one line per entry in path order, closing line."""
    ordered = sorted(entries, key=lambda e: e.path)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    lines = [json.dumps({"format": FORMAT, "version": VERSION, "created": now, "instances": len(ordered)})]
    lines.extend(json.dumps(_entry_record(e)) for e in ordered)
    lines.append(json.dumps({"end": True, "instances": len(ordered)}))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _entry_record(entry: Expected) -> dict[str, str | int]:
    record: dict[str, str | int] = {
        "SOPInstanceUID": entry.sop_instance_uid,
        "path": entry.path,
        "size": entry.size,
        "sha256": entry.sha256,
    }
    if entry.study_uid:
        record["StudyInstanceUID"] = entry.study_uid
    if entry.series_uid:
        record["SeriesInstanceUID"] = entry.series_uid
    return record


def locked_backup(
    dest: Path,
    what: str = "backup",
    *,
    wait: bool = False,
    on_wait: Callable[[LockHolder | None], None] = lambda holder: None,
) -> AbstractContextManager[None]:
    """Hold the backup folder's lock as `what`: one backup (or verify, repair) at a time per
    folder. Busy: LockBusy (exit 1) naming the holder's pid and start, or with `wait` a wait."""
    return locks.exclusive(
        dest / LOCK_NAME,
        what,
        resource=str(dest),
        wait=wait,
        on_wait=on_wait,
        hint="wait for it to finish, or run with --wait",
    )
