"""An instance's header for people (`dcmdump`-like text) and for programs (the DICOM JSON model
of PS3.18 F.2), as `pacsctl dump` prints them.

Text: one line per element, `(gggg,eeee) VR Keyword  value`, sequence items indented, values cut
to a width, binary values and pixel data summarised (sizes, frames, geometry), never printed.
JSON: pydicom's `to_json_dict`; values over `BULK_THRESHOLD` bytes become a `BulkDataURI` that
names the file and the element (`file:///…/x.dcm#7FE00010`) instead of inline base64.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

DEFAULT_WIDTH = 72
BULK_THRESHOLD = 1024
_BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})


def dump_lines(ds: Dataset, width: int = DEFAULT_WIDTH) -> Iterator[str]:
    """The header as text lines: the File Meta group (when present), then the data set."""
    meta = getattr(ds, "file_meta", None)
    if meta:
        syntax = meta.get("TransferSyntaxUID")
        name = getattr(syntax, "name", "") if syntax is not None else ""
        yield f"# File Meta Information ({name or 'no transfer syntax'})"
        yield from _lines(meta, width, 0, ds)
        yield "# Data set"
    yield from _lines(ds, width, 0, ds)


def _lines(ds: Dataset, width: int, depth: int, top: Dataset) -> Iterator[str]:
    indent = "  " * depth
    for elem in ds:
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        name = elem.keyword or (f"[{elem.private_creator}]" if elem.tag.is_private and _creator(elem) else "")
        name = name or ("(private)" if elem.tag.is_private else "(unknown)")
        if elem.VR == "SQ":
            items = elem.value or []
            yield f"{indent}{tag} SQ {name:<36} {len(items)} item(s)"
            for n, item in enumerate(items, 1):
                yield f"{indent}  > item {n}"
                yield from _lines(item, width, depth + 1, top)
            continue
        yield f"{indent}{tag} {elem.VR:<2} {name:<36} {_value_text(elem, width, top)}"


def _creator(elem: DataElement) -> bool:
    try:
        return bool(elem.private_creator)
    except (AttributeError, ValueError):
        return False


def _value_text(elem: DataElement, width: int, top: Dataset) -> str:
    if int(elem.tag) in _PIXEL_TAGS:
        return _pixel_summary(elem, top)
    value = elem.value
    if elem.VR in _BINARY_VRS or isinstance(value, bytes | bytearray):
        size = len(value) if isinstance(value, bytes | bytearray) else 0
        return f"<{size} bytes>"
    if value is None or value == "":
        return "(no value)"
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    text = " ".join(text.split())  # no control characters or line breaks from a value
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"


def _pixel_summary(elem: DataElement, ds: Dataset) -> str:
    value = elem.value
    size = len(value) if isinstance(value, bytes | bytearray) else 0
    parts = [f"{size} bytes"]
    if elem.is_undefined_length:
        parts[0] += ", encapsulated"
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if rows and cols:
        parts.append(f"{cols}x{rows}")
    frames = ds.get("NumberOfFrames") or 1
    parts.append(f"{frames} frame(s)")
    if "BitsAllocated" in ds:
        parts.append(f"{ds.BitsAllocated} bits allocated, {ds.get('BitsStored', '?')} stored")
    if "SamplesPerPixel" in ds:
        parts.append(f"{ds.SamplesPerPixel} sample(s)")
    if "PhotometricInterpretation" in ds:
        parts.append(str(ds.PhotometricInterpretation))
    return "<" + ", ".join(parts) + ">"


def dicom_json(ds: Dataset, file_uri: str = "", bulk_threshold: int = BULK_THRESHOLD) -> dict[str, Any]:
    """The data set in the DICOM JSON model (PS3.18 F.2; group 0002 is not part of it). Values
    longer than `bulk_threshold` bytes are a BulkDataURI `file_uri#ggggeeee` (when `file_uri`
    is given), else left out with their VR only."""

    def bulk(elem: DataElement) -> str:
        return f"{file_uri}#{int(elem.tag):08X}" if file_uri else ""

    data = ds.to_json_dict(bulk_data_threshold=bulk_threshold, bulk_data_element_handler=bulk)
    if not file_uri:
        _drop_empty_bulk(data)
    return data


def _drop_empty_bulk(data: dict[str, Any]) -> None:
    for attribute in data.values():
        if attribute.get("BulkDataURI") == "":
            del attribute["BulkDataURI"]
        for item in attribute.get("Value", []) if attribute.get("vr") == "SQ" else []:
            _drop_empty_bulk(item)
