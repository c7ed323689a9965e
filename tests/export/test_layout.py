"""export/layout: names safe on every common file system, within budgets, deterministic."""

from __future__ import annotations

import pytest

from pacsctl.errors import UsageError
from pacsctl.export.layout import COMPONENT_BUDGET, DEFAULT_LAYOUT, PATH_BUDGET, Layout, sanitize


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ('a/b\\c:d*e?f"g<h>i|j', "a_b_c_d_e_f_g_h_i_j"),
        ("tab\there\x00\x7f", "tab_here__"),
        ("trailing dots... ", "trailing dots"),
        ("  lead", "lead"),
        ("CON", "_CON"),
        ("nul.txt", "_nul.txt"),
        ("Com1", "_Com1"),
        ("LPT9.dcm", "_LPT9.dcm"),
        ("CONSOLE", "CONSOLE"),
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("...", "_"),
    ],
)
def test_sanitize(raw: str, safe: str) -> None:
    assert sanitize(raw) == safe


def test_long_components_are_cut_to_the_budget_in_utf8_bytes_keeping_the_extension() -> None:
    name = sanitize("é" * 100 + ".dcm")
    assert len(name.encode()) <= COMPONENT_BUDGET and name.endswith(".dcm")
    assert name.encode().decode() == name  # not cut inside a character
    assert len(sanitize("x" * 300, budget=20)) == 20


def _record(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "PatientID": "P1",
        "StudyInstanceUID": "1.1",
        "StudyDate": "20240101",
        "AccessionNumber": "A1",
        "SeriesInstanceUID": "1.1.1",
        "SeriesNumber": 2,
        "SeriesDescription": "AX/COR*",
        "InstanceNumber": 7,
        "SOPInstanceUID": "1.1.1.1",
    }
    base.update(fields)
    return base


def test_default_layout() -> None:
    assert Layout().path_of(_record()) == "P1/20240101_A1/002_AX_COR_/00007.dcm"
    assert Layout().template == DEFAULT_LAYOUT


def test_empty_fields_name_the_component_unknown() -> None:
    path = Layout().path_of(_record(StudyDate="", AccessionNumber="", SeriesNumber="", InstanceNumber=""))
    assert path == "P1/unknown/_AX_COR_/unknown.dcm"


def test_collisions_get_the_uids_hash_and_ignore_case() -> None:
    layout = Layout()
    first = layout.path_of(_record())
    same_number = layout.path_of(_record(SOPInstanceUID="1.1.1.2"))
    other_series = layout.path_of(_record(SeriesInstanceUID="1.1.2", SeriesDescription="ax/cor*", SOPInstanceUID="1.1.2.1"))
    assert first == "P1/20240101_A1/002_AX_COR_/00007.dcm"
    assert same_number.startswith("P1/20240101_A1/002_AX_COR_/00007~") and same_number.endswith(".dcm")
    assert other_series.split("/")[2].startswith("002_ax_cor_~")
    assert layout.path_of(_record()) == first  # asked again: the same name
    again = Layout()  # a new run over the same records in the same order: the same names
    assert [again.path_of(_record()), again.path_of(_record(SOPInstanceUID="1.1.1.2"))] == [first, same_number]


def test_paths_keep_the_path_budget() -> None:
    long = "D" * 500
    path = Layout("{PatientID}/{StudyDescription}/{SeriesDescription}/{SeriesDescription}/{SOPInstanceUID}.dcm").path_of(
        _record(PatientID=long, StudyDescription=long, SeriesDescription=long)
    )
    assert len(path) <= PATH_BUDGET and path.endswith(".dcm")


def test_unknown_fields_are_a_usage_error_listing_the_fields() -> None:
    with pytest.raises(UsageError, match="PatientNmae"):
        Layout("{PatientNmae}/{SOPInstanceUID}.dcm")
    with pytest.raises(UsageError):
        Layout("{PatientID")
