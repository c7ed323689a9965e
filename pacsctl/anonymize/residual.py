"""The leak scan: after de-identifying, look for the original patient in every value left.

The anchors are taken from the data set before it is changed: the parts of the patient's
names, the patient IDs, the birth date, the accession number and the institution. Every text
value that remains, at any depth (private elements an option kept too), is searched for them.
A hit names the attribute and the kind of anchor, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"}
)
_WORDS = re.compile(r"[^0-9A-Z\u00C0-\uFFFF]+")
# Two-letter words are everywhere in DICOM text (CT, MR, OB, AP): a two-letter name part is
# searched only as part of its whole name component (a phrase), longer ones as words too.
MIN_WORD = 3
MIN_ID_SUBSTRING = 4  # IDs this long are searched inside other words, shorter ones as words
# Values the anonymizer writes itself: a patient "named" like them is not found in them.
OWN_WORDS = frozenset({"ANONYMIZED", "ANONYMOUS", "XXX"})
# Text that is not free text: coded strings, numbers, and the identifiers of coded concepts.
NOT_SCANNED_VRS = frozenset({"CS", "DS", "IS", "TM", "AS"})
CODE_IDENTIFIERS = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080119, 0x00080120})
# Code meanings come from terminologies ("Recording Observer's Name"): searched for whole name
# components and IDs, not for single words.
CODE_MEANING = 0x00080104


class AnchorKind(StrEnum):
    """What a found anchor was in the original."""

    NAME = "a part of the patient's name"
    PATIENT_ID = "a patient ID"
    BIRTH_DATE = "the birth date"
    ACCESSION = "the accession number"
    INSTITUTION = "the institution"


# Where each kind comes from in the original data set (top level).
ANCHOR_SOURCES: dict[AnchorKind, tuple[str, ...]] = {
    AnchorKind.NAME: ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName"),
    AnchorKind.PATIENT_ID: ("PatientID", "OtherPatientIDs"),
    AnchorKind.BIRTH_DATE: ("PatientBirthDate",),
    AnchorKind.ACCESSION: ("AccessionNumber",),
    AnchorKind.INSTITUTION: ("InstitutionName", "InstitutionAddress"),
}


@dataclass(frozen=True)
class Leak:
    """An anchor found in the output: where (a keyword path) and what kind (not the value)."""

    path: str
    kind: AnchorKind

    def __str__(self) -> str:
        return f"{self.kind.value} remains in {self.path}"


@dataclass(frozen=True)
class Anchors:
    """The original patient's identifying strings, upper-case: words, and substrings."""

    words: dict[str, AnchorKind]
    substrings: dict[str, AnchorKind]
    phrases: dict[str, AnchorKind] = field(default_factory=dict)  # whole words, in order

    def find(self, text: str, words: bool = True) -> AnchorKind | None:
        """The kind of the first anchor in `text`, or None (`words=False`: only IDs, dates and
        whole phrases)."""
        upper = text.upper()
        for needle, kind in self.substrings.items():
            if needle in upper:
                return kind
        if self.words or self.phrases:
            found = [w for w in _WORDS.split(upper) if w]
            for word in found if words else ():
                hit = self.words.get(word)
                if hit is not None:
                    return hit
            joined = " " + " ".join(found) + " "
            for phrase, kind in self.phrases.items():
                if f" {phrase} " in joined:
                    return kind
        return None

    def __bool__(self) -> bool:
        return bool(self.words or self.substrings or self.phrases)


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    items = (
        list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    )
    return [str(v) for v in items if str(v).strip()]


def collect_anchors(ds: Dataset, exempt: frozenset[AnchorKind] = frozenset()) -> Anchors:
    """The anchors of the original data set `ds`, leaving out the kinds in `exempt` (those an
    option or the site profile keeps on purpose, such as the institution with --keep-institution)."""
    words: dict[str, AnchorKind] = {}
    substrings: dict[str, AnchorKind] = {}
    phrases: dict[str, AnchorKind] = {}
    vendor = " " + " ".join(w for w in _WORDS.split(str(ds.get("Manufacturer", "") or "").upper()) if w) + " "
    for kind, keywords in ANCHOR_SOURCES.items():
        if kind in exempt:
            continue
        for keyword in keywords:
            for value in _values(ds, keyword):
                upper = value.upper().strip()
                if kind is AnchorKind.NAME:
                    for component in re.split(r"[\^=]", upper):
                        parts = [w for w in _WORDS.split(component) if w and w not in OWN_WORDS]
                        if len(parts) > 1:
                            phrases.setdefault(" ".join(parts), kind)
                        for part in parts:
                            if len(part) >= MIN_WORD:
                                words.setdefault(part, kind)
                elif kind is AnchorKind.INSTITUTION:
                    # A phrase of whole words. An institution named like the vendor (service
                    # and test data) says no more than Manufacturer, which the profile keeps.
                    phrase = " ".join(w for w in _WORDS.split(upper) if w)
                    if phrase and f" {phrase} " not in vendor and phrase not in OWN_WORDS:
                        phrases.setdefault(phrase, kind)
                elif upper in OWN_WORDS:
                    continue
                elif len(upper) >= MIN_ID_SUBSTRING:
                    substrings.setdefault(upper, kind)
                elif len(upper) >= MIN_WORD:
                    words.setdefault(upper, kind)
    return Anchors(words, substrings, phrases)


def scan(ds: Dataset, anchors: Anchors) -> list[Leak]:
    """Every text value of `ds` (at any depth) that holds an anchor, as Leaks."""
    if not anchors:
        return []
    return list(_scan(ds, anchors, ""))


def _scan(ds: Dataset, anchors: Anchors, prefix: str) -> Iterator[Leak]:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = _vr(tag, raw)
        if vr == "SQ":
            for index, item in enumerate(ds[tag].value):
                yield from _scan(item, anchors, f"{prefix}{_name(tag)}[{index}].")
            continue
        if vr in NOT_SCANNED_VRS or tag in CODE_IDENTIFIERS:
            continue
        private_bytes = tag.is_private and vr in ("UN", "OB")
        if vr not in TEXT_VRS and not private_bytes:
            continue
        text = _text(ds, tag, raw, private_bytes)
        if not text:
            continue
        kind = anchors.find(text, words=tag != CODE_MEANING)
        if kind is not None:
            yield Leak(prefix + _name(tag), kind)


def _vr(tag: BaseTag, raw: Any) -> str:
    vr = getattr(raw, "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def _text(ds: Dataset, tag: BaseTag, raw: Any, private_bytes: bool) -> str:
    """The element's value as text: ASCII raw bytes as they are (no decoding needed to search
    them), anything else decoded by pydicom with the data set's character set."""
    value = raw.value
    if isinstance(value, bytes):
        if private_bytes or value.isascii():
            return value.decode("latin-1")
        value = ds[tag].value
    if value is None or value == "":
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _name(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
