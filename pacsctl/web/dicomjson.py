"""Index records in the DICOM JSON model (PS3.18 F.2): `{"0020000D": {"vr": "UI", "Value": [...]}}`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

_NUMBER_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV", "DS", "FL", "FD"})


@lru_cache(maxsize=512)
def tag_and_vr(keyword: str) -> tuple[str, str]:
    """The tag as 8 upper-case hex digits and the (first) dictionary VR of a keyword."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}", str(dictionary_VR(tag)).split(" or ")[0]


def _values(value: Any, vr: str) -> list[Any]:
    items = value if isinstance(value, (list, tuple)) else str(value).split("\\")
    out: list[Any] = []
    for item in items:
        if vr == "PN":
            out.append({"Alphabetic": str(item)})
        elif vr in _NUMBER_VRS:
            try:
                number = float(item)
                out.append(int(number) if number.is_integer() and vr not in ("FL", "FD") else number)
            except (TypeError, ValueError):
                continue  # a malformed number in the index: left out, never a 500
        else:
            out.append(str(item))
    return out


def element(keyword: str, value: Any) -> tuple[str, dict[str, Any]]:
    """One attribute of the JSON model; an empty value has no `Value` (PS3.18 F.2.5)."""
    tag, vr = tag_and_vr(keyword)
    if value is None or value == "" or value == []:
        return tag, {"vr": vr}
    values = _values(value, vr)
    return tag, ({"vr": vr, "Value": values} if values else {"vr": vr})


def record_to_json(record: Mapping[str, Any], keywords: Iterable[str]) -> dict[str, Any]:
    """The `keywords` of an index record (those it holds) as a DICOM JSON object, tags sorted."""
    out: dict[str, Any] = {}
    for keyword in keywords:
        if keyword in record:
            try:
                tag, attr = element(keyword, record[keyword])
            except KeyError:  # not a DICOM keyword (the index's own fields)
                continue
            out[tag] = attr
    return dict(sorted(out.items()))
