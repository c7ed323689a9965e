"""A small STOW-RS client (DICOM PS3.18 10.5): POST instances to `BASE/studies`, and read from
the answer which of them the server stored.

A 200 alone proves nothing (servers answer 200 and store nothing): an instance counts as stored
only when its SOP Instance UID is in the response's Referenced SOP Sequence (0008,1199).
Standard library only (http.client): one request per batch, the instances in memory (batches
are bounded by the caller), sent piece by piece. A route's credentials (`HttpAuth`) name a file,
read at every request (a rotated token needs no `route add` again); the secret goes into the
Authorization header only, never into a message.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import uuid
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from urllib.parse import urlsplit

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"


class StowFailure(Enum):
    """Why a whole request failed (decided from the socket and the HTTP status)."""

    UNREACHABLE = "unreachable"  # no connection, TLS failure, no answer
    SERVER = "server"  # 5xx, 407, 429 (not the instances' fault: try again later)
    AUTH = "auth"  # 401/403: the server refuses our credentials (or their absence)
    SECRET = "secret"  # the credentials' file cannot be read: nothing was sent
    REFUSED = "refused"  # another 4xx: the server refuses these instances


class StowError(Exception):
    """A STOW-RS request that did not get a usable answer."""

    def __init__(self, message: str, failure: StowFailure) -> None:
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class StowAnswer:
    """What the server said it stored (SOP Instance UIDs), and why it refused the others."""

    stored: frozenset[str]
    failed: dict[str, str]  # SOP Instance UID -> reason (the Failure Reason, as hex)


class AuthKind(StrEnum):
    """How a request authenticates."""

    BEARER = "bearer"  # Authorization: Bearer <the file's first line>
    BASIC = "basic"  # Authorization: Basic base64(user:<the file's first line>)


@dataclass(frozen=True)
class HttpAuth:
    """A destination's credentials: the kind, and the file holding the secret (its path only)."""

    kind: AuthKind
    secret_file: Path
    user: str = ""  # BASIC only

    def header(self) -> str:
        """The Authorization header's value, the secret read now. Raises StowError (SECRET)."""
        secret = read_secret_line(self.secret_file)
        if self.kind is AuthKind.BEARER:
            return f"Bearer {secret}"
        return "Basic " + base64.b64encode(f"{self.user}:{secret}".encode()).decode("ascii")


def read_secret_line(path: Path) -> str:
    """The first line of a secret file, without its line end (StowError SECRET when the file
    cannot be read or that line is empty; the message names the file, never its content)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(64 * 1024)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise StowError(f"cannot read the secret file {path}: {why}", StowFailure.SECRET) from None
    try:
        secret = first.decode("utf-8").strip("\r\n")
    except UnicodeDecodeError:
        raise StowError(f"the secret file {path} is not UTF-8 text", StowFailure.SECRET) from None
    if not secret.strip():
        raise StowError(f"the secret file {path} has an empty first line", StowFailure.SECRET)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in secret):
        # http.client would refuse the header with the value in its message
        raise StowError(f"the secret file {path} holds control characters", StowFailure.SECRET)
    return secret


class StowClient:
    """POSTs Part-10 files to one DICOMweb service (`http(s)://host[:port]/path/to/dicom-web`)."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 60.0,
        context: ssl.SSLContext | None = None,
        auth: HttpAuth | None = None,
    ) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self.path = (parts.path or "") + "/studies"
        self.timeout = timeout
        self.context = context
        self.auth = auth
        self.where = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def store(self, instances: list[bytes]) -> StowAnswer:
        """Send `instances` (Part-10 bytes) in one request. Raises StowError."""
        authorization = self.auth.header() if self.auth is not None else None
        boundary = uuid.uuid4().hex.encode()
        # The body as pieces sent one after the other (http.client takes an iterable with a
        # Content-Length): the instances' bytes are not copied into one more buffer.
        part_head = b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n"
        body: list[bytes] = []
        for i, data in enumerate(instances):
            body += [b"\r\n" + part_head if i else part_head, data]
        body.append((b"\r\n" if instances else b"") + b"--" + boundary + b"--\r\n")
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary.decode()}',
            "Accept": "application/dicom+json",
            "Content-Length": str(sum(len(piece) for piece in body)),
        }
        if authorization is not None:
            headers["Authorization"] = authorization
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            rsp = conn.getresponse()
            payload = rsp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise StowError(
                f"{self.where}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}",
                StowFailure.UNREACHABLE,
            ) from None
        finally:
            conn.close()
        if rsp.status in (401, 403):
            raise StowError(f"{self.where}: authentication refused (HTTP {rsp.status})", StowFailure.AUTH)
        if rsp.status >= 500 or rsp.status in (407, 429):
            raise StowError(f"{self.where}: HTTP {rsp.status} {rsp.reason}", StowFailure.SERVER)
        if rsp.status >= 400 and rsp.status != 409:  # 409: some failed, the body says which
            raise StowError(f"{self.where}: HTTP {rsp.status} {rsp.reason}", StowFailure.REFUSED)
        return _answer(payload)

    def _connection(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host,
                self.port,
                timeout=self.timeout,
                context=self.context or ssl.create_default_context(),
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


def _answer(payload: bytes) -> StowAnswer:
    """The stored and failed instances a STOW response names (DICOM JSON; empty if none)."""
    try:
        doc = json.loads(payload) if payload.strip() else {}
    except ValueError:
        doc = {}
    if isinstance(doc, list):  # a few servers wrap the one data set in a list
        doc = doc[0] if doc and isinstance(doc[0], dict) else {}
    if not isinstance(doc, dict):
        doc = {}
    stored = {uid for item in _items(doc, REFERENCED_SOP_SEQUENCE) for uid in _values(item)}
    failed = {}
    for item in _items(doc, FAILED_SOP_SEQUENCE):
        reason = item.get(FAILURE_REASON, {}).get("Value", [""])[0] if isinstance(item, dict) else ""
        for uid in _values(item):
            failed[uid] = f"failure reason 0x{int(reason):04X}" if str(reason).isdigit() else "refused"
    return StowAnswer(frozenset(stored), failed)


def _items(doc: dict, tag: str) -> list[dict]:
    element = doc.get(tag)
    if not isinstance(element, dict):
        return []
    return [item for item in element.get("Value", []) if isinstance(item, dict)]


def _values(item: dict) -> list[str]:
    element = item.get(REFERENCED_SOP_INSTANCE_UID)
    if not isinstance(element, dict):
        return []
    return [str(v) for v in element.get("Value", []) if v]
