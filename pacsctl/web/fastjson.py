"""One instance's header in the DICOM JSON model straight from its bytes, without pydicom.

pydicom's `dcmread` + `to_json_dict` cost 2-3 ms per CT instance here (building a Dataset,
converting every value, then walking it again): most of a cold `/metadata`. Almost every stored
instance is plain: explicit VR little endian, ASCII values. For those one walk over the bytes
gives the same JSON (a test compares the two on many files). Anything else (implicit VR, big
endian, deflate, non-ASCII text, an odd VR or framing) returns None: the caller uses pydicom.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

from pacsctl.dicom.rawheader import DicomBytes

_HEAD = struct.Struct("<HH2sH").unpack_from
_TAG_LEN = struct.Struct("<HHI").unpack_from
_U32 = struct.Struct("<I").unpack_from
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
EXPLICIT_LE_UID = "1.2.840.10008.1.2.1"  # native pixel data

_LONG = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_MULTI_TEXT = frozenset(b"AE AS CS DA DT LO SH TM UC UI".split())  # backslash-separated values
_SINGLE_TEXT = frozenset(b"LT ST UT UR".split())
_BINARY = frozenset(b"OB OD OF OL OV OW".split())
_NUMBERS = {
    b"US": struct.Struct("<H"),
    b"SS": struct.Struct("<h"),
    b"UL": struct.Struct("<I"),
    b"SL": struct.Struct("<i"),
    b"FL": struct.Struct("<f"),
    b"FD": struct.Struct("<d"),
    b"SV": struct.Struct("<q"),
    b"UV": struct.Struct("<Q"),
}
_DEFAULT_CHARSETS = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"})  # ASCII reads the same


class _NotPlain(Exception):
    pass


def json_header(
    data: DicomBytes, start: int, bulk_threshold: int, bulk_uri: Callable[[int], str]
) -> tuple[dict[str, Any], bool] | None:
    """The data set starting at `data[start]` (explicit VR little endian) up to its pixel data,
    as pydicom's `to_json_dict(bulk_threshold, handler)` gives it, and whether pixel data
    follows; None when it is not the plain case."""
    walker = _Walker(data, (bulk_threshold // 4) * 3, bulk_uri)
    try:
        out, _end = walker.dataset(start, len(data), top=True)
    except (_NotPlain, struct.error, UnicodeDecodeError, ValueError):
        return None
    charset = out.get("00080005", {}).get("Value", [""])
    if len(charset) > 1 or charset[0] not in _DEFAULT_CHARSETS:
        return None  # ASCII only was checked; another character set may still mean escapes
    return out, walker.pixels


class _Walker:
    def __init__(self, data: DicomBytes, inline_max: int, bulk_uri: Callable[[int], str]) -> None:
        self.data = data
        self.inline_max = inline_max
        self.bulk_uri = bulk_uri
        self.pixels = False

    def dataset(
        self, pos: int, end: int, top: bool = False, item: bool = False
    ) -> tuple[dict[str, Any], int]:
        data = self.data
        out: dict[str, Any] = {}
        while pos < end:
            if pos + 8 > end:
                raise _NotPlain
            group, element, vr, short = _HEAD(data, pos)
            tag = (group << 16) | element
            if tag == _ITEM_END and item:
                return out, pos + 8
            if group == 0xFFFE or group == 0x0002:
                raise _NotPlain
            if top and tag == _PIXEL_DATA:
                self.pixels = True
                return out, pos
            if tag >= _PIXEL_DATA:
                raise _NotPlain  # trailing elements after pixel data: pydicom's path
            if vr in _LONG:
                length = _U32(data, pos + 8)[0]
                pos += 12
            elif vr.isalpha() and vr.isupper():
                length = short
                pos += 8
            else:
                raise _NotPlain
            key = f"{tag:08X}"
            if key in out:
                raise _NotPlain
            if vr == b"SQ":
                out[key], pos = self.sequence(pos, end, length)
                continue
            if length == _UNDEFINED or pos + length > end:
                raise _NotPlain
            out[key] = self.value(tag, vr, data[pos : pos + length])
            pos += length
        if item:
            raise _NotPlain  # an undefined-length item must end with its delimiter
        return out, pos

    def sequence(self, pos: int, end: int, length: int) -> tuple[dict[str, Any], int]:
        data = self.data
        stop = None if length == _UNDEFINED else pos + length
        if stop is not None and stop > end:
            raise _NotPlain
        items: list[dict[str, Any]] = []
        while True:
            if stop is not None and pos == stop:
                break
            group, element, item_length = _TAG_LEN(data, pos)
            tag = (group << 16) | element
            pos += 8
            if tag == _SEQ_END and stop is None:
                if item_length:
                    raise _NotPlain
                break
            if tag != _ITEM:
                raise _NotPlain
            if item_length == _UNDEFINED:
                ds, pos = self.dataset(pos, stop if stop is not None else end, item=True)
            else:
                if pos + item_length > end:
                    raise _NotPlain
                ds, after = self.dataset(pos, pos + item_length)
                if after != pos + item_length:
                    raise _NotPlain
                pos = after
            items.append(ds)
        return ({"vr": "SQ", "Value": items}), pos

    def value(self, tag: int, vr: bytes, raw: bytes) -> dict[str, Any]:
        name = vr.decode("ascii")
        out: dict[str, Any] = {"vr": name}
        if vr == b"UN":
            raise _NotPlain  # pydicom gives a known tag its dictionary's VR
        if vr in _BINARY:
            if raw:
                if len(raw) > self.inline_max:
                    out["BulkDataURI"] = self.bulk_uri(tag)
                else:
                    out["InlineBinary"] = base64.b64encode(raw).decode("ascii")
            return out
        if vr in _NUMBERS:
            unpack = _NUMBERS[vr]
            if len(raw) % unpack.size:
                raise _NotPlain
            if raw:
                values = [v[0] for v in unpack.iter_unpack(raw)]
                if vr in (b"FL", b"FD") and any(v != v or v in (float("inf"), float("-inf")) for v in values):
                    raise _NotPlain  # NaN/inf: JSON has no spelling for them
                out["Value"] = values
            return out
        if vr == b"AT":
            if len(raw) % 4:
                raise _NotPlain
            if raw:
                out["Value"] = [f"{g:04X}{e:04X}" for g, e in struct.iter_unpack("<HH", raw)]
            return out
        if not raw.isascii() or b"\x1b" in raw:
            raise _NotPlain
        text = raw.decode("ascii")
        if vr in _SINGLE_TEXT:
            text = text.rstrip("\x00 ")
            if text:
                out["Value"] = [text]
            return out
        text = text.rstrip("\x00 ") if vr != b"UI" else text.rstrip("\x00")
        if not text:
            return out
        if vr == b"PN":
            out["Value"] = [_person_name(v) for v in text.split("\\")]
            return out
        if vr not in _MULTI_TEXT and vr not in (b"IS", b"DS"):
            raise _NotPlain
        parts = text.split("\\")
        if vr == b"IS":
            out["Value"] = [int(p) for p in parts]  # ValueError (an empty one): pydicom's path
        elif vr == b"DS":
            out["Value"] = [float(p) for p in parts]
        else:
            out["Value"] = parts  # pydicom strips the whole value only, not each one
        return out


def _person_name(text: str) -> dict[str, str]:
    groups = text.split("=")
    if len(groups) > 3:
        raise _NotPlain
    comps = {"Alphabetic": groups[0]}
    if len(groups) > 1:
        comps["Ideographic"] = groups[1]
    if len(groups) > 2:
        comps["Phonetic"] = groups[2]
    return comps
