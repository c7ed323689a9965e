"""C-STORE-RSP command sets decoded by hand, for the sender's reactor thread.

Profiled (`pacsctl send`, 1000 files to DCMTK storescp): pynetdicom decodes every response's
command set with pydicom (lazy elements, tag lookups, UID objects) and reads it back element by
element into the primitive, ~0.25 ms of the reactor thread per file, on the path between the
peer's answer and the next file. A C-STORE-RSP holds a handful of fixed elements (PS3.7
9.3.1.2): those are decoded here; a command with anything else (Offending Element, a second
copy of a tag, a wrong length, another command) returns None and pydicom decodes it, as before.
"""

from __future__ import annotations

from typing import Any

from pacsctl.net.fastpath.commandset import CommandSet, NotPlain, decode_elements

C_STORE_RSP = 0x8001

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


class StoreResponse(CommandSet):
    """A decoded C-STORE-RSP command set."""


def _read_text(kind: str, value: bytes) -> Any:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise NotPlain from None
    # pydicom: a UID loses trailing NUL padding and spaces, LO text trailing spaces and NULs
    # (leading spaces are significant in LO, kept).
    text = text.rstrip("\x00 ")
    return text.strip() if kind == "UI" else text


def decode_store_response(raw: bytes | memoryview) -> StoreResponse | None:
    """Decode an implicit VR little endian C-STORE-RSP command set, or None when it is not a
    plain one (the caller then uses pydicom)."""
    elems = decode_elements(raw, _ELEMENTS, _read_text, _REQUIRED)
    if elems is None:
        return None
    response = StoreResponse(elems)
    if response.CommandField != C_STORE_RSP:
        return None
    return response
