"""PS3.15 Table E.1-1 (edition 2024b), shipped as package data, loaded into typed rows.

The table is the anonymizer's only list of attributes: every action comes from a row (or from
one of its wildcard rows: curves 50xx, overlays 60xx, private elements), never from a list
written out here. `data/README.md` says where the CSV comes from and what its columns mean.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from functools import cache
from importlib import resources

TABLE_FILE = "ps3.15-table-e1-1.csv"
TABLE_EDITION = "2024b"


class Action(StrEnum):
    """The action codes of PS3.15 E.1.1."""

    DUMMY = "D"  # replace with a non-empty dummy valid for the VR
    EMPTY = "Z"  # replace with an empty value
    REMOVE = "X"
    KEEP = "K"  # in a sequence: keep it and apply the profile inside its items
    CLEAN = "C"  # replace with a non-identifying value of similar meaning
    UID = "U"  # replace with a UID consistent within the set of instances


class Option(Enum):
    """The table's option columns: (CSV column, CID 7050 code, code meaning, command-line flag)."""

    KEEP_DATES = (
        "retain_long_full_dates_option",
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
        "--keep-dates",
    )
    SHIFT_DATES = (
        "retain_long_modified_dates_option",
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
        "--shift-dates",
    )
    KEEP_UIDS = ("retain_uids_option", "113110", "Retain UIDs Option", "--keep-uids")
    KEEP_DEVICE = (
        "retain_device_identity_option",
        "113109",
        "Retain Device Identity Option",
        "--keep-device",
    )
    KEEP_INSTITUTION = (
        "retain_institution_identity_option",
        "113112",
        "Retain Institution Identity Option",
        "--keep-institution",
    )
    KEEP_PATIENT_CHARACTERISTICS = (
        "retain_patient_characteristics_option",
        "113108",
        "Retain Patient Characteristics Option",
        "--keep-patient-characteristics",
    )
    CLEAN_DESCRIPTORS = (
        "clean_descriptors_option",
        "113105",
        "Clean Descriptors Option",
        "--clean-descriptors",
    )
    KEEP_SAFE_PRIVATE = (
        "retain_safe_private_option",
        "113111",
        "Retain Safe Private Option",
        "--keep-safe-private",
    )
    CLEAN_STRUCTURED_CONTENT = (
        "clean_structured_content_option",
        "113104",
        "Clean Structured Content Option",
        "--clean-structured-content",
    )
    CLEAN_GRAPHICS = ("clean_graphics_option", "113103", "Clean Graphics Option", "--clean-graphics")

    @property
    def column(self) -> str:
        return self.value[0]

    @property
    def code(self) -> str:
        """Its code in CID 7050 (coding scheme DCM)."""
        return self.value[1]

    @property
    def meaning(self) -> str:
        return self.value[2]

    @property
    def flag(self) -> str:
        return self.value[3]


BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


class Pattern(StrEnum):
    """Which tags a row covers."""

    EXACT = "exact"
    CURVE = "50xxxxxx"  # every element of the (retired) curve groups 5000-501E
    OVERLAY_DATA = "60xx3000"  # even groups 6000-601E
    OVERLAY_COMMENTS = "60xx4000"
    PRIVATE = "ggggeeee"  # every element of an odd group


@dataclass(frozen=True)
class Row:
    """One row of Table E.1-1.

    `basic` holds the Basic Profile's alternatives in the table's order (`X/Z/D` is
    (REMOVE, EMPTY, DUMMY)); `options` the action each option sets where it sets one.
    """

    pattern: Pattern
    tag: int | None  # None for the wildcard rows
    keyword: str
    name: str
    vr: str
    basic: tuple[Action, ...]
    options: dict[Option, Action] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How reports name the row: its keyword, else its tag pattern."""
        return self.keyword or self.pattern.value


@dataclass(frozen=True)
class Table:
    """The rows, indexed: exact tags in a dict, the wildcard rows apart."""

    rows: tuple[Row, ...]
    exact: dict[int, Row]
    wildcards: dict[Pattern, Row]

    def row_for(self, tag: int) -> Row | None:
        """The row that covers `tag` (an exact row first, then the wildcard rows), or None."""
        row = self.exact.get(tag)
        if row is not None:
            return row
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1:
            return self.wildcards.get(Pattern.PRIVATE)
        if 0x5000 <= group <= 0x501E:
            return self.wildcards.get(Pattern.CURVE)
        if 0x6000 <= group <= 0x601E:
            if element == 0x3000:
                return self.wildcards.get(Pattern.OVERLAY_DATA)
            if element == 0x4000:
                return self.wildcards.get(Pattern.OVERLAY_COMMENTS)
        return None


def parse_actions(code: str) -> tuple[Action, ...]:
    """`X/Z/U*` -> (REMOVE, EMPTY, UID): the alternatives of a compound code (U* is a U that, on
    a sequence, means "keep it and replace the UIDs inside")."""
    return tuple(Action(part.rstrip("*")) for part in code.split("/"))


def _pattern(tag: str) -> Pattern:
    lowered = tag.lower()
    if "x" in lowered or "g" in lowered:
        return Pattern(lowered)
    return Pattern.EXACT


def parse_table(text: str) -> Table:
    """Rows from the CSV's text (see data/README.md for the columns)."""
    rows: list[Row] = []
    for record in csv.DictReader(io.StringIO(text)):
        pattern = _pattern(record["tag"])
        options = {option: Action(record[option.column]) for option in Option if record[option.column]}
        rows.append(
            Row(
                pattern=pattern,
                tag=int(record["tag"], 16) if pattern is Pattern.EXACT else None,
                keyword=record["keyword"],
                name=record["name"],
                vr=record["vr_pydicom"],
                basic=parse_actions(record["basic_profile_action"]),
                options=options,
            )
        )
    exact = {row.tag: row for row in rows if row.tag is not None}
    wildcards = {row.pattern: row for row in rows if row.tag is None}
    return Table(tuple(rows), exact, wildcards)


@cache
def load_table() -> Table:
    """Table E.1-1 from the package's data (read once per process)."""
    text = resources.files("pacsctl.anonymize").joinpath("data", TABLE_FILE).read_text(encoding="utf-8")
    return parse_table(text)
