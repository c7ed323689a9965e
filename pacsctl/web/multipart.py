"""A streaming multipart/related parser (RFC 2046 / 2387): part bodies go to sinks as the bytes
arrive, so a STOW of a 2 GB study is never held in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MAX_HEADER_BYTES = 16 * 1024


class MalformedMultipart(ValueError):
    """The body is not the multipart message its Content-Type announces."""


class PartSink(Protocol):
    """Where one part's body goes."""

    def write(self, data: bytes | bytearray) -> None: ...

    def close(self) -> None: ...


def boundary_of(content_type: str) -> str | None:
    """The `boundary` parameter of a Content-Type header (quotes removed), or None."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip().strip('"')
            return value or None
    return None


def parse_headers(block: bytes) -> dict[str, str]:
    """A part's header block as a dict with lower-case names."""
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MalformedMultipart("a part header line has no ':'")
        headers[name.strip().lower()] = value.strip()
    return headers


class MultipartParser:
    """Feed the body with `feed`, then call `finish`. `open_part(headers)` is called at each
    part's start and returns its sink, which is closed at the part's end."""

    def __init__(self, boundary: str, open_part: Callable[[dict[str, str]], PartSink]) -> None:
        self._delimiter = b"\r\n--" + boundary.encode("latin-1")
        self._open_part = open_part
        self._buffer = bytearray(b"\r\n")  # so that a delimiter at the very start matches too
        self._state = "preamble"
        self._sink: PartSink | None = None
        self.parts = 0

    @property
    def done(self) -> bool:
        """True once the closing delimiter was read."""
        return self._state == "end"

    def feed(self, chunk: bytes) -> None:
        """Parse more of the body."""
        if self._state == "end":
            return  # the epilogue is ignored
        self._buffer += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        buf, delim = self._buffer, self._delimiter
        if self._state in ("preamble", "body"):
            at = buf.find(delim)
            if at < 0:
                keep = len(delim) + 1
                if self._state == "body" and len(buf) > keep:
                    assert self._sink is not None
                    self._sink.write(buf[: len(buf) - keep])  # a copy: buf shrinks next
                    del buf[: len(buf) - keep]
                elif self._state == "preamble" and len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            if self._state == "body":
                assert self._sink is not None
                self._sink.write(buf[:at])
                self._sink.close()
                self._sink = None
            del buf[: at + len(delim)]
            self._state = "after-delimiter"
            return True
        if self._state == "after-delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "end"
                buf.clear()
                return False
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                if len(buf) > 256:
                    raise MalformedMultipart("no line break after a boundary")
                return False
            if buf[:line_end].strip(b" \t"):  # only transport padding may follow a boundary
                raise MalformedMultipart("text after a boundary")
            del buf[: line_end + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            if buf.startswith(b"\r\n"):  # a part without headers
                block, rest = b"", 2
            else:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEADER_BYTES:
                        raise MalformedMultipart("a part's headers are too long")
                    return False
                block, rest = bytes(buf[:end]), end + 4
            headers = parse_headers(block)
            del buf[:rest]
            self._sink = self._open_part(headers)
            self.parts += 1
            self._state = "body"
            return True
        return False

    def finish(self) -> None:
        """The body has ended: raises MalformedMultipart unless it was complete."""
        if self._state != "end":
            if self._sink is not None:
                self._sink.close()
                self._sink = None
            raise MalformedMultipart(
                "the body ended before the closing boundary" if self.parts else "no part in the body"
            )
