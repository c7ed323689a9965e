"""WADO-RS (PS3.18 10.4): studies, series and instances as multipart/related application/dicom,
streamed from the stored files (never a whole study in memory); the stored bytes go out
untouched when the client accepts their transfer syntax (`transfer-syntax=*` or the stored
one), else they are transcoded to Explicit VR Little Endian with pydicom's codecs."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsctl.web.errors import WebError

EXPLICIT_LE = "1.2.840.10008.1.2.1"
_UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", EXPLICIT_LE, "1.2.840.10008.1.2.2"})
CHUNK = 1 << 20


@dataclass(frozen=True)
class MediaRange:
    """One item of an Accept header: `multipart/related; type="application/dicom"; ...`."""

    media_type: str
    params: Mapping[str, str]

    @property
    def part_type(self) -> str:
        """The media type of the parts (the `type` parameter of a multipart/related range)."""
        if self.media_type == "multipart/related":
            return self.params.get("type", "application/dicom")
        return self.media_type


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header (quoted parameters unquoted, q ignored)."""
    ranges = []
    for item in _split_outside_quotes(header or "*/*", ","):
        fields = _split_outside_quotes(item, ";")
        if not fields or not fields[0].strip():
            continue
        params = {}
        for param in fields[1:]:
            name, _, value = param.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(fields[0].strip().lower(), params))
    return ranges


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def dicom_syntax_wanted(accept: Sequence[MediaRange], stored: str) -> str | None:
    """The transfer syntax to send an instance stored in `stored` in: None for the stored bytes
    as they are, else the syntax to transcode to. Raises 406 when nothing acceptable is dicom."""
    acceptable = [
        r
        for r in accept
        if r.media_type in ("*/*", "multipart/*", "multipart/related")
        and r.part_type in ("application/dicom", "*/*", "application/*")
    ]
    if not acceptable:
        raise WebError(
            406,
            'only multipart/related; type="application/dicom" is served here',
            hint='send Accept: multipart/related; type="application/dicom"; transfer-syntax=*',
        )
    syntaxes = [r.params.get("transfer-syntax") for r in acceptable]
    if "*" in syntaxes or stored in syntaxes:
        return None
    # No syntax named: PS3.18's default is Explicit VR Little Endian for uncompressed data;
    # a compressed instance goes out as stored (most viewers decode it, and Orthanc does so).
    if all(s is None for s in syntaxes):
        return None if stored == EXPLICIT_LE or stored not in _UNCOMPRESSED else EXPLICIT_LE
    if EXPLICIT_LE in syntaxes:
        return EXPLICIT_LE
    raise WebError(
        406,
        f"cannot transcode to the transfer syntaxes asked for (stored as {stored})",
        hint=f"accept transfer-syntax=* or {EXPLICIT_LE}",
    )


def transcoded(path: Path, syntax: str) -> bytes:
    """The instance at `path` in Explicit VR Little Endian (decompressed when needed)."""
    import pydicom

    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Part:
    """One part of a multipart answer: a file's bytes (or bytes made for it) and its type."""

    content_type: str
    path: Path | None = None
    size: int = 0
    data: bytes | None = None
    location: str = ""


class Multipart:
    """A multipart/related body streamed part by part, with its length when it is known."""

    def __init__(self, part_type: str, parts: Sequence[Part]) -> None:
        self.boundary = secrets.token_hex(16)
        self.part_type = part_type
        self.parts = parts

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def _head(self, part: Part) -> bytes:
        head = f"--{self.boundary}\r\nContent-Type: {part.content_type}\r\n"
        if part.location:
            head += f"Content-Location: {part.location}\r\n"
        return (head + "\r\n").encode()

    def length(self) -> int | None:
        """The body's length in bytes, or None when a part's size is not known yet."""
        if any(p.data is None and p.path is None for p in self.parts):
            return None
        total = len(self._tail())
        for part in self.parts:
            size = len(part.data) if part.data is not None else part.size
            total += len(self._head(part)) + size + 2
        return total

    def _tail(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode()

    def chunks(self) -> Iterator[bytes]:
        """The body, a file at a time (large files in `CHUNK`s)."""
        for part in self.parts:
            head = self._head(part)
            if part.data is not None:
                yield head + part.data + b"\r\n"
                continue
            assert part.path is not None
            with open(part.path, "rb") as fh:
                first = fh.read(CHUNK)
                if len(first) < CHUNK:
                    yield head + first + b"\r\n"
                    continue
                yield head + first
                while chunk := fh.read(CHUNK):
                    yield chunk
                yield b"\r\n"
        yield self._tail()


def instance_parts(
    root: Path, records: Sequence[Mapping[str, Any]], accept: Sequence[MediaRange]
) -> list[Part]:
    """The parts of a WADO-RS retrieve of `records` (instance records), in series and instance
    order; transcoding, where needed, happens here."""
    parts = []
    for record in records:
        stored = str(record.get("TransferSyntaxUID", ""))
        path = root / str(record["path"])
        syntax = dicom_syntax_wanted(accept, stored)
        if syntax is None:
            parts.append(
                Part(f"application/dicom; transfer-syntax={stored}", path, int(record.get("size", 0)))
            )
        else:
            try:
                data = transcoded(path, syntax)
            except Exception as exc:  # noqa: BLE001 - a codec missing for this syntax
                raise WebError(
                    406,
                    f"cannot transcode an instance stored as {stored} ({type(exc).__name__})",
                    hint="accept transfer-syntax=*",
                ) from None
            parts.append(Part(f"application/dicom; transfer-syntax={syntax}", data=data))
    return parts
