"""Reading and writing the files of an anonymization fast: the header through pydicom, the pixel
data as raw bytes.

De-identification never changes pixel data, so a file whose Pixel Data is its last element is
parsed only up to it (`read_header`) and written back as the new header followed by the
original Pixel Data bytes (`encode`): no decode, no copy through pydicom, byte-identical pixels.
Anything else (elements after Pixel Data, deflated syntaxes, float pixel data) is read whole.
File Meta is written here by hand: seven elements, and pydicom's general writer cost more than
the rest of the header.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

IMPLEMENTATION_VERSION = "PACSCTL_ANON"
PREAMBLE = b"\x00" * 128
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


@dataclass
class Header:
    """A parsed data set and, when it was read without them, the raw bytes of its Pixel Data
    (`tail`, to be written back as they are). `has_pixels` says whether it holds any."""

    dataset: Dataset
    tail: bytes | memoryview
    has_pixels: bool


def read_header(data: bytes) -> Header:
    """Parse `data` (a Part-10 file or a bare data set), leaving trailing Pixel Data raw."""
    stream = io.BytesIO(data)
    ds = pydicom.dcmread(stream, stop_before_pixels=True, force=True)
    start = stream.tell()
    if start >= len(data):
        return Header(ds, b"", False)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    implicit, little = ds.original_encoding
    if syntax != pydicom.uid.DeflatedExplicitVRLittleEndian and None not in (implicit, little):
        end = _pixel_data_end(data, start, bool(implicit), bool(little))
        if end == len(data):
            return Header(ds, memoryview(data)[start:], True)
    full = pydicom.dcmread(io.BytesIO(data), force=True)
    return Header(full, b"", any(tag in full for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009)))


def _pixel_data_end(data: bytes, start: int, implicit: bool, little: bool) -> int | None:
    """Where the (7FE0,0010) element at `start` ends, or None if it is not one."""
    order = "<" if little else ">"
    try:
        group, element = struct.unpack_from(order + "HH", data, start)
        if (group, element) != (0x7FE0, 0x0010):
            return None
        if implicit:
            (length,) = struct.unpack_from(order + "L", data, start + 4)
            position = start + 8
        else:
            if data[start + 4 : start + 6] not in _LONG_VRS:
                return None
            (length,) = struct.unpack_from(order + "L", data, start + 8)
            position = start + 12
        if length != _UNDEFINED:
            return position + length
        while True:  # encapsulated: items up to the sequence delimiter
            group, element, length = struct.unpack_from(order + "HHL", data, position)
            position += 8
            if (group, element) == (0xFFFE, 0xE0DD):
                return position
            if (group, element) != (0xFFFE, 0xE000) or length == _UNDEFINED:
                return None
            position += length
    except struct.error:
        return None


def transfer_syntax_of(ds: Dataset) -> str:
    """The data set's transfer syntax: its File Meta's, else the encoding it was read in."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return str(syntax)
    implicit, little = ds.original_encoding
    if implicit:
        return pydicom.uid.ImplicitVRLittleEndian
    return pydicom.uid.ExplicitVRLittleEndian if little is not False else pydicom.uid.ExplicitVRBigEndian


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    """Group 0002 for a new file (explicit VR little endian, as PS3.10 requires)."""
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", _text(sop_class, b"\x00")),
            _meta_element(0x0003, b"UI", _text(sop_instance, b"\x00")),
            _meta_element(0x0010, b"UI", _text(syntax, b"\x00")),
            _meta_element(0x0012, b"UI", _text(PYDICOM_IMPLEMENTATION_UID, b"\x00")),
            _meta_element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION, b" ")),
        )
    )
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def encode(ds: Dataset, tail: bytes | memoryview = b"") -> bytes:
    """`ds` as a Part-10 file in its own transfer syntax: zero preamble, new File Meta, the
    data set, then `tail` (the raw Pixel Data it was read without)."""
    syntax = transfer_syntax_of(ds)
    if syntax == pydicom.uid.DeflatedExplicitVRLittleEndian:  # pydicom deflates the whole data set
        return _encode_with_pydicom(ds, syntax)
    uid = pydicom.uid.UID(syntax)
    out = DicomBytesIO()
    out.write(PREAMBLE + b"DICM" + file_meta(str(ds.SOPClassUID), str(ds.SOPInstanceUID), syntax))
    out.is_implicit_VR, out.is_little_endian = uid.is_implicit_VR, uid.is_little_endian
    if ds.original_encoding == (uid.is_implicit_VR, uid.is_little_endian) and (
        ds.original_character_set == ds._character_set
    ):
        _write_top_level(out, ds)
    else:
        write_dataset(out, ds)
    return b"".join((out.getvalue(), tail))


def _write_top_level(out: DicomBytesIO, ds: Dataset) -> None:
    """`write_dataset` for a data set written in the encoding it was read in: elements still
    raw (kept as read) are copied with a header packed here, the others written by pydicom."""
    encodings = ds.get("SpecificCharacterSet", "iso8859")
    order = "<" if out.is_little_endian else ">"
    implicit = out.is_implicit_VR
    for tag in sorted(ds.keys()):
        if tag.element == 0 and tag.group > 6:  # retired group lengths are never written
            continue
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != _UNDEFINED
            and not raw.is_buffered
            and (implicit or raw.VR)
        ):
            value = raw.value or b""
            if implicit:
                out.write(struct.pack(order + "HHL", tag.group, tag.element, len(value)))
            elif raw.VR.encode() in _LONG_VRS:
                out.write(struct.pack(order + "HH2s2xL", tag.group, tag.element, raw.VR.encode(), len(value)))
            else:
                out.write(struct.pack(order + "HH2sH", tag.group, tag.element, raw.VR.encode(), len(value)))
            out.write(value)
        else:
            write_data_element(out, ds[tag], encodings)


def _encode_with_pydicom(ds: Dataset, syntax: str) -> bytes:
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.UID(syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.preamble = PREAMBLE
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
