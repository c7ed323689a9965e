"""New identities derived from a secret key: UIDs, patient pseudonyms, per-patient date offsets.

Everything is HMAC-SHA256 under the key, so the same key gives the same UIDs, pseudonyms and
offsets in every run (a cohort stays linkable over years), and nobody without the key can
recompute them from the original values. `Identity` also records what it replaced, for
`--map-out` (the only place originals and replacements meet).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pacsctl.errors import UsageError
from pacsctl.storage import files

KEY_BYTES = 32
DATE_SHIFT_DAYS = (365, 3650)  # dates move back by 1 to 10 years, whole days (times and ages stay)


class MapKind(StrEnum):
    """What a line of the mapping file maps."""

    UID = "uid"
    PATIENT_ID = "patient_id"
    DATE_OFFSET = "date_offset_days"


@dataclass(frozen=True)
class MapEntry:
    """One original -> replacement pair for those allowed to re-identify."""

    kind: MapKind
    original: str
    replacement: str


def random_key() -> bytes:
    """A fresh key for a run without one (its UIDs cannot be reproduced later)."""
    return secrets.token_bytes(KEY_BYTES)


def read_key_file(path: Path) -> bytes:
    """The key in `path` (its bytes; one trailing newline ignored)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the key file {path}: {exc.strerror}") from None
    data = data[:-1] if data.endswith(b"\n") else data
    data = data[:-1] if data.endswith(b"\r") else data
    if not data:
        raise UsageError(f"the key file {path} is empty", hint="write a long random secret into it")
    return data


def read_patient_map(path: Path) -> dict[str, str]:
    """`--patient-map CSV`: rows of real Patient ID, chosen pseudonym (a header row is allowed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"cannot read the patient map {path}: {exc.strerror}") from None
    mapping: dict[str, str] = {}
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or not row[1].strip():
            raise UsageError(
                f"{path}: line {number} has no pseudonym",
                hint="each line is: real Patient ID, pseudonym",
            )
        real, chosen = row[0].strip(), row[1].strip()
        if number == 1 and real.lower() in ("patientid", "patient_id", "real", "original"):
            continue  # a header row
        if len(chosen) > 64:
            raise UsageError(f"{path}: line {number}: a pseudonym has at most 64 characters (LO)")
        mapping[real] = chosen
    return mapping


class Identity:
    """Keyed replacements; each call records its pair when `recording` (for `--map-out`)."""

    def __init__(self, key: bytes, patient_map: dict[str, str] | None = None, recording: bool = False):
        self._key = key
        self._patient_map = patient_map or {}
        self.recording = recording
        self.entries: dict[tuple[MapKind, str], str] = {}
        self._uids: dict[str, str] = {}

    def _digest(self, domain: bytes, value: str) -> bytes:
        return hmac.new(
            self._key, domain + b"\0" + value.encode("utf-8", "surrogateescape"), hashlib.sha256
        ).digest()

    def uid(self, original: str) -> str:
        """`2.25.` and the decimal of the first 128 bits of HMAC-SHA256(key, UID)."""
        original = original.strip("\0 ")
        if not original:
            return original
        new = self._uids.get(original)
        if new is None:
            new = self._uids[original] = "2.25." + str(
                int.from_bytes(self._digest(b"uid", original)[:16], "big")
            )
            if self.recording:
                self.entries[(MapKind.UID, original)] = new
        return new

    def patient_id(self, original: str) -> str:
        """The pseudonym for a Patient ID: from the patient map, else `ANON` and 16 keyed
        base32 characters."""
        chosen = self._patient_map.get(original)
        if chosen is None:
            digest = self._digest(b"patient", original)[:10]
            chosen = "ANON" + base64.b32encode(digest).decode("ascii")
        if self.recording:
            self.entries[(MapKind.PATIENT_ID, original)] = chosen
        return chosen

    def date_offset(self, patient_key: str) -> int:
        """Days to add to every date of this patient (negative: into the past), the same for
        all of the patient's files and runs under this key."""
        low, high = DATE_SHIFT_DAYS
        number = int.from_bytes(self._digest(b"date-offset", patient_key)[:8], "big")
        offset = -(low + number % (high - low + 1))
        if self.recording:
            self.entries[(MapKind.DATE_OFFSET, patient_key)] = str(offset)
        return offset

    def short_code(self, domain: str, original: str, length: int) -> str:
        """A keyed stand-in of `length` characters (A-Z, 2-7) for a cleaned value such as an AE title."""
        return base64.b32encode(self._digest(domain.encode(), original)).decode("ascii")[:length]

    def take_entries(self) -> list[MapEntry]:
        """The pairs recorded since the last call (and forget them)."""
        taken = [MapEntry(kind, original, new) for (kind, original), new in self.entries.items()]
        self.entries.clear()
        return taken


def write_map(path: Path, entries: Iterable[MapEntry]) -> int:
    """Write the mapping CSV (kind, original, replacement) atomically with mode 0600; return the
    number of lines. It holds patient identifiers: it is never printed."""
    unique = sorted({(e.kind.value, e.original, e.replacement) for e in entries})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["kind", "original", "replacement"])
    writer.writerows(unique)
    path = path.absolute()
    files.ensure_dir(path.parent)
    files.write_atomic(path.parent, path, buffer.getvalue().encode("utf-8", "surrogateescape"))
    os.chmod(path, files.FILE_MODE)
    return len(unique)
