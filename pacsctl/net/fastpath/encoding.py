"""Little-endian data elements, written by hand where pydicom's writer costs too much per
message: C-STORE-RSP command sets (implicit VR) and File Meta groups (explicit VR).

One encoder for both, so padding and lengths are decided in one place (PS3.5 7.1, 6.2).
"""

from __future__ import annotations

import re
import struct
from typing import TypeGuard

# VRs whose explicit VR encoding has a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})

_PLAIN_UID = re.compile(r"[0-9.]{1,64}").fullmatch

#: Stands in for a C-STORE command's missing or unusable Affected SOP Class/Instance UID on
#: pynetdicom's path, which ignores a request without them (no answer, its temp file left):
#: with it the request is served, and refused, like any other. `is_uid` is False for it.
PLACEHOLDER_UID = "1.2.826.0.1.3680043.10.1524.0.1"


def is_uid(value: object) -> TypeGuard[str]:
    """Whether `value` can be a UID on the wire and a file name: 1-64 digits and dots. Looser
    than PS3.5 9.1 (leading zeros pass: peers send them), strict on what matters here."""
    return isinstance(value, str) and _PLAIN_UID(value) is not None and value != PLACEHOLDER_UID


def uid_value(uid: str) -> bytes:
    """A UI value: ASCII, padded to even length with NUL. Raises UnicodeEncodeError for a
    non-ASCII value (check with `is_uid` first)."""
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def text_value(text: str, limit: int | None = None) -> bytes:
    """A text value (AE, SH, ...): ASCII (others replaced), cut to `limit`, padded with a
    space."""
    raw = text.encode("ascii", "replace")[:limit]
    return raw + b" " if len(raw) % 2 else raw


def us(value: int) -> bytes:
    """An unsigned short (US) value."""
    return struct.pack("<H", value)


def ul(value: int) -> bytes:
    """An unsigned long (UL) value."""
    return struct.pack("<I", value)


def element(group: int, elem: int, value: bytes, vr: bytes | None = None) -> bytes:
    """One data element: implicit VR when `vr` is None (4-byte length), else explicit VR."""
    if vr is None:
        return struct.pack("<HHI", group, elem, len(value)) + value
    if vr in _LONG_VRS:
        return struct.pack("<HH", group, elem) + vr + struct.pack("<HI", 0, len(value)) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def group(group_number: int, elements: list[bytes], explicit: bool) -> bytes:
    """A group of encoded `elements` headed by its group length element (gggg,0000) UL."""
    body = b"".join(elements)
    return element(group_number, 0x0000, ul(len(body)), b"UL" if explicit else None) + body
