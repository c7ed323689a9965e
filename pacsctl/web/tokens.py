"""Access tokens of the DICOMweb side: created by `pacsctl token create`, checked per request.

Tokens are stored hashed (SHA-256 of a 256-bit random secret: a stolen archive yields no usable
token) in `ARCHIVE/web-tokens.json`, written atomically with a private mode. A token may be
limited to studies and/or one patient, is read-only unless `write`, and always expires.
Writers (`create`, `revoke`) take a lock file so that two at once lose nothing; the server
re-reads the file when it changes, so a revoke applies to the next request.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pacsctl.errors import UsageError
from pacsctl.storage import files

TOKENS_FILE = "web-tokens.json"
_LOCK_FILE = "web-tokens.lock"
TOKEN_PREFIX = "pct_"
DEFAULT_EXPIRY = "8h"
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Token:
    """One stored token (its secret is not kept, only its hash)."""

    id: str
    sha256: str
    created: str
    expires: str
    studies: tuple[str, ...] = ()
    patient: str | None = None
    write: bool = False
    note: str = ""

    def expired(self, now: dt.datetime | None = None) -> bool:
        """True once the expiry time has passed."""
        return (now or dt.datetime.now(dt.UTC)) >= dt.datetime.fromisoformat(self.expires)

    @property
    def scoped(self) -> bool:
        """True when the token sees only some studies (a study list or a patient)."""
        return bool(self.studies) or self.patient is not None

    def allows_study(self, study_uid: str, patient_id: str | None) -> bool:
        """Whether a study (with its PatientID) is within this token's scope."""
        if self.studies and study_uid not in self.studies:
            return False
        return self.patient is None or patient_id == self.patient

    def public(self) -> dict[str, Any]:
        """What `token list` shows: everything but the hash."""
        record = asdict(self)
        del record["sha256"]
        record["studies"] = list(self.studies)
        return record


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the secret (shown once) and its stored record."""

    secret: str
    token: Token = field(repr=False)


def parse_expiry(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`8h`, `30m`, `7d`, `1w` (from now) or an ISO time (UTC when no zone) -> an aware time."""
    now = now or dt.datetime.now(dt.UTC)
    value = text.strip().lower()
    match = _DURATION.fullmatch(value)
    if match:
        seconds = int(match[1]) * _UNITS[match[2]]
        if seconds <= 0:
            raise UsageError("--expires must be in the future", hint="e.g. --expires 8h")
        return now + dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"cannot read {text!r} as an expiry", hint="an age like 8h, 30m, 7d or an ISO time"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    if when <= now:
        raise UsageError("--expires must be in the future", hint="e.g. --expires 8h")
    return when


def hash_secret(secret: str) -> str:
    """The stored form of a token's secret."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TokenStore:
    """The tokens of one archive (`root`): create, list, revoke, and look up by secret."""

    def __init__(self, root: Path, tmp_dir: Path | None = None) -> None:
        self.path = Path(root) / TOKENS_FILE
        self.tmp_dir = tmp_dir or Path(root) / "tmp"
        self._lock_path = Path(root) / _LOCK_FILE
        self._seen: tuple[int, int, int] | None = None
        self._by_hash: dict[str, Token] = {}

    def create(
        self,
        expires: dt.datetime,
        studies: tuple[str, ...] = (),
        patient: str | None = None,
        write: bool = False,
        note: str = "",
    ) -> IssuedToken:
        """A new token with this scope; its secret is returned here and never again."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        token = Token(
            id="tok-" + secrets.token_hex(4),
            sha256=hash_secret(secret),
            created=now.isoformat(timespec="seconds"),
            expires=expires.astimezone(dt.UTC).isoformat(timespec="seconds"),
            studies=tuple(dict.fromkeys(studies)),
            patient=patient,
            write=write,
            note=note,
        )
        with self._locked():
            tokens = self._read()
            tokens.append(token)
            self._write(tokens)
        return IssuedToken(secret, token)

    def all(self) -> list[Token]:
        """Every stored token (expired ones too), oldest first."""
        return self._read()

    def revoke(self, token_id: str) -> Token:
        """Remove a token by id; raises UsageError when there is none."""
        with self._locked():
            tokens = self._read()
            kept = [t for t in tokens if t.id != token_id]
            if len(kept) == len(tokens):
                raise UsageError(f"no token with id {token_id!r}", hint="see `pacsctl token list`")
            self._write(kept)
        return next(t for t in tokens if t.id == token_id)

    def lookup(self, secret: str) -> Token | None:
        """The live (stored, unexpired) token with this secret, or None. The file is re-read
        when it changed since the last look."""
        self._refresh()
        token = self._by_hash.get(hash_secret(secret))
        if token is None or token.expired():
            return None
        return token

    # -- the file ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = (0, 0, 0)
        if seen != self._seen:
            self._by_hash = {t.sha256: t for t in self._read()}
            self._seen = seen

    def _read(self) -> list[Token]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except ValueError:
            raise UsageError(
                f"{self.path} is not valid JSON", hint="restore it, or remove it to revoke every token"
            ) from None
        return [_token_of(item) for item in raw.get("tokens", [])]

    def _write(self, tokens: list[Token]) -> None:
        payload = {"tokens": [asdict(t) for t in tokens]}
        files.write_atomic(self.tmp_dir, self.path, json.dumps(payload, indent=1).encode())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, files.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _token_of(item: Mapping[str, Any]) -> Token:
    return Token(
        id=str(item["id"]),
        sha256=str(item["sha256"]),
        created=str(item.get("created", "")),
        expires=str(item["expires"]),
        studies=tuple(item.get("studies") or ()),
        patient=item.get("patient"),
        write=bool(item.get("write", False)),
        note=str(item.get("note", "")),
    )
