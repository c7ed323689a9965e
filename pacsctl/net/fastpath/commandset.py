"""DIMSE command sets decoded by hand: the part the C-STORE-RQ (`receive`) and C-STORE-RSP
(`storersp`) decoders share.

A command set is implicit VR little endian (PS3.7 6.3.1) with a handful of fixed elements per
message type. Each decoder gives its table of elements (tag -> keyword, kind) and how its text
values read; `decode_elements` walks the bytes and returns None for anything that is not the
plain case (an element outside the table, a second copy of a tag, a wrong length), so the
caller hands that command to pydicom, as pynetdicom would.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple


class Element(NamedTuple):
    """What pynetdicom's `message_to_primitive` reads of a pydicom DataElement."""

    tag: int
    keyword: str
    value: Any
    VM: int = 1


class NotPlain(Exception):
    """A value a text reader will not take: pydicom decodes the command instead."""


# tag -> (keyword, kind); kind "US" and "UL" are read here, any other by the decoder's reader
ElementTable = Mapping[int, tuple[str, str]]
TextReader = Callable[[str, bytes], Any]  # (kind, value bytes) -> value; raises NotPlain


class CommandSet:
    """A decoded command set, with the attribute and iteration interface pynetdicom's DIMSE
    code uses on a pydicom Dataset."""

    def __init__(self, elems: list[Element]) -> None:
        self._elems = elems
        for e in elems:
            setattr(self, e.keyword, e.value)

    def __iter__(self) -> Iterator[Element]:
        return iter(self._elems)

    def __getattr__(self, keyword: str) -> Any:  # the elements are set as attributes
        raise AttributeError(keyword)

    def __contains__(self, keyword: object) -> bool:
        return any(e.keyword == keyword for e in self._elems)

    def get(self, keyword: str, default: Any = None) -> Any:
        return getattr(self, keyword, default)


def decode_elements(
    raw: bytes | memoryview, table: ElementTable, read_text: TextReader, required: frozenset[int]
) -> list[Element] | None:
    """The elements of command set `raw` when each is in `table`, appears once, has the length
    its kind needs and `required` are all there; else None."""
    elems: list[Element] = []
    seen: set[int] = set()
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHI", raw, pos)
        pos += 8
        tag = (group << 16) | element
        spec = table.get(tag)
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
                value = read_text(kind, bytes(raw[pos : pos + length]))
            except NotPlain:
                return None
        pos += length
        elems.append(Element(tag, keyword, value))
    return elems if required <= seen else None
