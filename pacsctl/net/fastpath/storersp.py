"""C-STORE-RSP command sets decoded by hand, for the sender's reactor thread.

Profiled (`pacsctl send`, 1000 files to DCMTK storescp): pynetdicom decodes every response's
command set with pydicom (lazy elements, tag lookups, UID objects) and reads it back element by
element into the primitive, ~0.25 ms of the reactor thread per file, on the path between the
peer's answer and the next file. A C-STORE-RSP holds a handful of fixed elements (PS3.7
9.3.1.2): those are decoded here; a command with anything else (Offending Element, a second
copy of a tag, a wrong length, another command) returns None and pydicom decodes it, as before.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

C_STORE_RSP = 0x8001


class Element(NamedTuple):
    """What pynetdicom's `message_to_primitive` reads of a pydicom DataElement."""

    tag: int
    keyword: str
    value: Any
    VM: int = 1


# tag -> (keyword, kind); kind: "UL", "US", "UI" or "LO"
_ELEMENTS = {
    0x00000000: ("CommandGroupLength", "UL"),
    0x00000002: ("AffectedSOPClassUID", "UI"),
    0x00000100: ("CommandField", "US"),
    0x00000120: ("MessageIDBeingRespondedTo", "US"),
    0x00000800: ("CommandDataSetType", "US"),
    0x00000900: ("Status", "US"),
    0x00000902: ("ErrorComment", "LO"),
    0x00001000: ("AffectedSOPInstanceUID", "UI"),
}
_REQUIRED = frozenset({0x00000100, 0x00000120, 0x00000800, 0x00000900})


class StoreResponse:
    """A decoded C-STORE-RSP command set, with the attribute and iteration interface
    pynetdicom's DIMSE code uses on a pydicom Dataset."""

    def __init__(self, elems: list[Element]) -> None:
        self._elems = elems
        for e in elems:
            setattr(self, e.keyword, e.value)

    def __iter__(self) -> Any:
        return iter(self._elems)

    def __getattr__(self, keyword: str) -> Any:  # the elements are set as attributes
        raise AttributeError(keyword)

    def __contains__(self, keyword: object) -> bool:
        return any(e.keyword == keyword for e in self._elems)

    def get(self, keyword: str, default: Any = None) -> Any:
        return getattr(self, keyword, default)


def decode_store_response(raw: bytes | memoryview) -> StoreResponse | None:
    """Decode an implicit VR little endian C-STORE-RSP command set, or None when it is not a
    plain one (the caller then uses pydicom)."""
    elems: list[Element] = []
    seen: set[int] = set()
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHI", raw, pos)
        pos += 8
        tag = (group << 16) | element
        spec = _ELEMENTS.get(tag)
        if spec is None or tag in seen or pos + length > end:
            return None
        seen.add(tag)
        keyword, kind = spec
        value: Any
        if kind == "US":
            if length != 2:
                return None
            (value,) = struct.unpack_from("<H", raw, pos)
        elif kind == "UL":
            if length != 4:
                return None
            (value,) = struct.unpack_from("<I", raw, pos)
        else:
            try:
                text = bytes(raw[pos : pos + length]).decode("ascii")
            except UnicodeDecodeError:
                return None
            # pydicom: a UID loses trailing NUL padding and spaces, LO text trailing spaces
            # and NULs (leading spaces are significant in LO, kept).
            value = text.rstrip("\x00 ")
            if kind == "UI":
                value = value.strip()
        pos += length
        elems.append(Element(tag, keyword, value))
    if not _REQUIRED <= seen:
        return None
    response = StoreResponse(elems)
    if response.CommandField != C_STORE_RSP:
        return None
    return response
