"""Errors about a query value never quote values of patient-identifying attributes, not even in
a `--debug` traceback (issue 10 item 21); other attributes' values are still quoted."""

from __future__ import annotations

import pytest

from pacsctl.dicom.identifying import PATIENT_IDENTIFYING, shown_value
from pacsctl.dicom.matching import compile_filters, parse_key_values
from pacsctl.errors import UsageError
from tests.helpers import run_cli

SECRET_DATE = "19700231"  # no such day: a range error that would quote it
SECRET_NAME = "DOE^JOHN"


@pytest.mark.parametrize("criteria", [
    {"PatientBirthDate": SECRET_DATE},
    {"PatientBirthDate": f"{SECRET_DATE}-19600101"},
    {"PatientBirthDate": "1970*"},
    {"PatientBirthTime": "2561"},
])
def test_matching_errors_name_the_keyword_not_the_value(criteria):
    keyword, value = next(iter(criteria.items()))
    with pytest.raises(UsageError) as caught:
        compile_filters(criteria)
    message = str(caught.value)
    assert keyword in message
    assert value not in message and value.rstrip("*") not in message


@pytest.mark.parametrize("item", [f"={SECRET_NAME}", SECRET_NAME, f"PatientName {SECRET_NAME}"])
def test_malformed_filters_are_not_quoted(item):
    with pytest.raises(UsageError) as caught:
        parse_key_values([item])
    assert SECRET_NAME not in str(caught.value)


def test_reprs_withhold_identifying_values():
    flt = compile_filters({"PatientName": "DOE*", "PatientID": "X123", "StudyDate": "20240101-"})
    text = repr(flt) + repr(list(flt.criteria.values()))
    assert "DOE" not in text and "X123" not in text
    assert "20240101-" in repr(flt)


def test_other_values_are_still_quoted():
    with pytest.raises(UsageError, match="'2024013x'"):
        compile_filters({"StudyDate": "2024013x"})
    assert shown_value("StudyDate", "x") == "'x'"
    assert {"PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs"} <= PATIENT_IDENTIFYING


def test_debug_traceback_does_not_carry_the_value(tmp_path):
    proc = run_cli("--archive", str(tmp_path / "a"), "--debug", "ls", "-k", f"PatientBirthDate={SECRET_DATE}")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "PatientBirthDate" in proc.stderr
    assert SECRET_DATE not in proc.stderr + proc.stdout
    plain = run_cli("--archive", str(tmp_path / "a"), "ls", "-k", f"PatientBirthDate={SECRET_DATE}")
    assert plain.returncode == 2 and SECRET_DATE not in plain.stderr
    assert "error: PatientBirthDate" in plain.stderr
