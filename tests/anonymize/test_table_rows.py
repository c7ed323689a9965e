"""Generated from Table E.1-1 itself: every row, at top level and inside a nested sequence,
under the Basic Profile and under each option that changes it.

The expectations are read from the shipped CSV here with the csv module (not through
pacsctl.anonymize.table), so a loader bug cannot hide an action bug. A compound code accepts
any of its alternatives, as the standard does.
"""

from __future__ import annotations

import csv
from importlib import resources

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacsctl.anonymize.deidentify import Anonymizer
from pacsctl.anonymize.profile import Options
from pacsctl.anonymize.table import Option, load_table

KEY = b"table-test-key"
# A sequence outside the table: kept, and the profile applies inside its items.
HOST = 0x00082218  # AnatomicRegionSequence
PSEUDONYM_TAGS = {0x00100010, 0x00100020}

CSV_TEXT = resources.files("pacsctl.anonymize").joinpath("data", "ps3.15-table-e1-1.csv").read_text("utf-8")
ROWS = list(csv.DictReader(CSV_TEXT.splitlines()))
EXACT = [r for r in ROWS if all(c in "0123456789ABCDEF" for c in r["tag"])]


def _value(vr: str, tag: int):
    """A recognisable original value for the VR."""
    return {
        "AE": "SECRETAE",
        "AS": "042Y",
        "CS": "SECRETCS",
        "DA": "20010203",
        "DS": "12.5",
        "DT": "20010203040506",
        "IS": "42",
        "TM": "040506",
        "UI": f"1.2.999.{tag}",
        "UR": "http://secret.example/x",
        "PN": "Secret^Person",
        "US": 7,
        "SS": 7,
        "UL": 7,
        "FL": 1.5,
        "FD": 1.5,
    }.get(vr, "SECRET VALUE" if vr in ("LO", "LT", "SH", "ST", "UC", "UT") else b"SECRETBY")


def _vr(row: dict) -> str:
    vr = row["vr_pydicom"] or "UN"
    return vr.split(" or ")[0]


def _dataset_with(tag: int, vr: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.999.1"
    if tag in (0x00080016, 0x00080018):
        pass
    if vr == "SQ":
        inner = Dataset()
        inner.CodeMeaning = "inner"
        ds.add_new(tag, "SQ", Sequence([inner]))
        nested_inner = Dataset()
        nested_inner.CodeMeaning = "inner"
        item = Dataset()
        item.add_new(tag, "SQ", Sequence([nested_inner]))
    else:
        ds.add_new(tag, vr, _value(vr, tag))
        item = Dataset()
        item.add_new(tag, vr, _value(vr, tag))
    ds.add_new(HOST, "SQ", Sequence([item]))
    return ds


def _allowed(codes: str) -> set[str]:
    return {part.rstrip("*") for part in codes.split("/")}


def _check(elem_holder: Dataset, tag: int, vr: str, allowed: set[str], anonymizer: Anonymizer) -> str:
    """Which allowed action the element shows; fails if it shows none of them."""
    original = _value(vr, tag)
    if tag not in elem_holder:
        assert "X" in allowed, f"removed, but the table says {allowed}"
        return "X"
    value = elem_holder[tag].value
    empty = value is None or value == "" or value == b"" or (vr == "SQ" and len(value) == 0)
    if empty:
        assert "Z" in allowed, f"emptied, but the table says {allowed}"
        return "Z"
    if tag in PSEUDONYM_TAGS:  # Z/D allow a dummy: the keyed pseudonym
        assert str(value).startswith("ANON") and ({"Z", "D"} & allowed)
        return "D"
    if "K" in allowed and (value == original or vr == "SQ"):
        return "K"
    if vr == "SQ":  # D, U* and C keep the sequence and apply the profile inside
        assert allowed & {"D", "U", "C"}, f"kept a sequence, but the table says {allowed}"
        assert value[0].CodeMeaning == "inner"
        return "C" if "C" in allowed else "D"
    if vr == "UI":
        assert allowed & {"U", "D"}, f"a UID replaced, but the table says {allowed}"
        assert value == anonymizer.identity.uid(original)
        return "U"
    if "C" in allowed:
        return "C"
    assert "D" in allowed, f"replaced with {value!r}, but the table says {allowed}"
    assert value != original
    return "D"


@pytest.mark.parametrize("row", EXACT, ids=[f"{r['tag']}-{r['keyword'] or r['name']}" for r in EXACT])
def test_basic_profile_row_at_top_level_and_nested(row: dict) -> None:
    tag, vr = int(row["tag"], 16), _vr(row)
    anonymizer = Anonymizer(KEY)
    ds = _dataset_with(tag, vr)
    anonymizer.dataset(ds)
    allowed = _allowed(row["basic_profile_action"])
    _check(ds, tag, vr, allowed, anonymizer)
    assert HOST in ds, "a sequence outside the table is kept"
    _check(ds[HOST].value[0], tag, vr, allowed, anonymizer)


OPTION_CASES = [
    (option, row)
    for option in Option
    for row in EXACT
    if row[option.column] and option is not Option.KEEP_SAFE_PRIVATE
]


@pytest.mark.parametrize(
    "option,row", OPTION_CASES, ids=[f"{o.name.lower()}-{r['tag']}" for o, r in OPTION_CASES]
)
def test_each_option_sets_its_column(option: Option, row: dict) -> None:
    tag, vr = int(row["tag"], 16), _vr(row)
    anonymizer = Anonymizer(KEY, Options(**{option.name.lower(): True}))
    ds = _dataset_with(tag, vr)
    anonymizer.dataset(ds)
    wanted = row[option.column]
    for holder in (ds, ds[HOST].value[0]):
        shown = _check(holder, tag, vr, {wanted}, anonymizer)
        assert shown == wanted
        if wanted == "K" and vr != "SQ":
            assert holder[tag].value == _value(vr, tag)
        if wanted == "C" and vr in ("DA", "DT"):  # --shift-dates: moved, not removed
            assert holder[tag].value != _value(vr, tag) and len(holder[tag].value) == len(_value(vr, tag))


def test_every_row_is_loaded() -> None:
    table = load_table()
    assert len(table.rows) == len(ROWS) == 621
    assert len(table.exact) == len(EXACT)
    assert {p.value for p in table.wildcards} == {"50xxxxxx", "60xx3000", "60xx4000", "ggggeeee"}


def _wildcard_dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.999.1"
    ds.add_new(0x50000010, "US", 3)  # curve dimensions (group 50xx: all of it)
    ds.add_new(0x50023000, "OB", b"curve")
    ds.add_new(0x60000010, "US", 8)  # OverlayRows: not in the table, kept
    ds.add_new(0x60003000, "OB", b"\x01" * 8)
    ds.add_new(0x60024000, "LT", "overlay comment")
    ds.add_new(0x00090010, "LO", "ACME 1.0")  # a private creator and its elements
    ds.add_new(0x00091001, "LO", "private text")
    ds.add_new(0x00091002, "SQ", Sequence([Dataset()]))
    return ds


@pytest.mark.parametrize("nested", [False, True])
def test_wildcard_rows_curves_overlays_and_private(nested: bool) -> None:
    ds = _wildcard_dataset()
    if nested:
        outer = Dataset()
        outer.SOPClassUID, outer.SOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        del ds.SOPClassUID, ds.SOPInstanceUID
        outer.add_new(HOST, "SQ", Sequence([ds]))
        Anonymizer(KEY).dataset(outer)
        ds = outer[HOST].value[0]
    else:
        Anonymizer(KEY).dataset(ds)
    left = {int(t) for t in ds.keys()}
    assert not left & {0x50000010, 0x50023000, 0x60003000, 0x60024000, 0x00090010, 0x00091001, 0x00091002}
    assert 0x60000010 in left


def test_clean_graphics_keeps_overlays_and_curves() -> None:
    ds = _wildcard_dataset()
    Anonymizer(KEY, Options(clean_graphics=True)).dataset(ds)
    assert {0x50000010, 0x50023000, 0x60003000, 0x60024000} <= {int(t) for t in ds.keys()}
    assert 0x00091001 not in ds
