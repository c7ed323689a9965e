"""DICOM matching (PS3.4 C.2.2.2) over index records: every matching kind and its edges."""

from __future__ import annotations

import unicodedata

import pytest

from pacsctl.dicom.matching import (
    LEVEL_KEYS,
    LEVELS,
    UNIQUE_KEY,
    compile_filters,
    level_from_name,
    parse_key_values,
    resolve_keyword,
)
from pacsctl.errors import EXIT_USAGE, UsageError


def match(key: str, query: str, value: object) -> bool:
    """Does a record holding `value` under `key` match `key=query`?"""
    return compile_filters({key: query}).matches({key: value})


# ---- levels ---------------------------------------------------------------


def test_level_keys_cover_each_level_and_hold_its_unique_key() -> None:
    assert tuple(LEVEL_KEYS) == LEVELS == ("PATIENT", "STUDY", "SERIES", "IMAGE")
    for level in LEVELS:
        assert LEVEL_KEYS[level][0] == UNIQUE_KEY[level]
    assert "ModalitiesInStudy" in LEVEL_KEYS["STUDY"]
    assert "NumberOfStudyRelatedInstances" in LEVEL_KEYS["STUDY"]
    all_keys = [k for keys in LEVEL_KEYS.values() for k in keys]
    assert len(all_keys) == len(set(all_keys))
    for key in all_keys:  # every one is a real keyword
        assert resolve_keyword(key) == key


def test_level_from_name() -> None:
    assert level_from_name("study") == "STUDY"
    assert level_from_name(" Instance ") == "IMAGE"
    with pytest.raises(UsageError):
        level_from_name("frame")


# ---- keywords and -k parsing -----------------------------------------------


@pytest.mark.parametrize(
    "given", ["PatientName", "patientname", "PATIENTNAME", "00100010", "0010,0010", "(0010,0010)"]
)
def test_resolve_keyword_forms(given: str) -> None:
    assert resolve_keyword(given) == "PatientName"


def test_unknown_keyword_is_a_usage_error_with_a_suggestion() -> None:
    with pytest.raises(UsageError) as err:
        compile_filters({"PatientNmae": "Doe"})
    assert err.value.exit_code == EXIT_USAGE
    assert "PatientName" in (err.value.hint or "")
    with pytest.raises(UsageError):
        resolve_keyword("NoSuchThingAtAll")
    with pytest.raises(UsageError, match="no keyword"):
        resolve_keyword("(0009,0010)")  # private tag


def test_parse_key_values() -> None:
    assert parse_key_values(["PatientID=123", "modality=CT", "StudyDate=", "PatientName=a=b"]) == {
        "PatientID": "123",
        "Modality": "CT",
        "StudyDate": "",
        "PatientName": "a=b",  # only the first '=' separates
    }
    assert parse_key_values([]) == {}


@pytest.mark.parametrize("bad", ["PatientID", "=123", "  =x", ""])
def test_parse_key_values_bad_form(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_key_values([bad])


def test_parse_key_values_duplicate_key() -> None:
    with pytest.raises(UsageError, match="more than once"):
        parse_key_values(["Modality=CT", "modality=MR"])


def test_compile_filters_rejects_same_keyword_twice_in_two_spellings() -> None:
    with pytest.raises(UsageError):
        compile_filters({"PatientID": "1", "patientid": "2"})


# ---- universal and empty value matching ------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "*"])
@pytest.mark.parametrize("key", ["PatientName", "StudyDate", "StudyInstanceUID", "SeriesNumber"])
def test_universal_matches_everything_including_missing_keys(key: str, query: str) -> None:
    f = compile_filters({key: query})
    assert f.is_universal() and f.keys == ()
    assert f.matches({}) and f.matches({key: ""}) and f.matches({key: "whatever"})


def test_missing_or_empty_key_matches_only_universal() -> None:
    f = compile_filters({"PatientName": "Doe*"})
    assert not f.matches({})
    assert not f.matches({"PatientName": ""})
    assert not f.matches({"PatientName": None})
    assert not f.matches({"PatientName": []})
    assert not compile_filters({"StudyDate": "20240101-"}).matches({"PatientID": "1"})


def test_empty_value_matching() -> None:
    f = compile_filters({"AccessionNumber": '""'})
    assert f.matches({}) and f.matches({"AccessionNumber": ""}) and f.matches({"AccessionNumber": None})
    assert not f.matches({"AccessionNumber": "A1"})


# ---- single value and wildcards on strings ----------------------------------


def test_single_value_is_exact_and_case_sensitive_for_non_pn() -> None:
    assert match("PatientID", "ABC123", "ABC123")
    assert not match("PatientID", "abc123", "ABC123")
    assert not match("PatientID", "ABC12", "ABC123")  # no prefix matching
    assert match("StudyDescription", "CT Head", "CT Head ")  # trailing pad insignificant
    assert match("AccessionNumber", " A1 ", "A1")


def test_wildcards_on_strings() -> None:
    assert match("StudyDescription", "CT*", "CT Head")
    assert match("StudyDescription", "*Head", "CT Head")
    assert match("StudyDescription", "C? H*d", "CT Head")
    assert not match("StudyDescription", "C?", "CT Head")
    assert not match("StudyDescription", "ct*", "CT Head")  # exact case outside PN
    assert match("StudyDescription", "*", "")  # '*' alone is universal
    assert match("AccessionNumber", "A*1", "A1")  # '*' matches zero characters
    # regex metacharacters are literal
    assert match("StudyDescription", "a.b+(c)*", "a.b+(c) [d]")
    assert not match("StudyDescription", "a.b", "axb")


def test_question_mark_is_exactly_one_character() -> None:
    assert match("PatientID", "A?C", "ABC")
    assert not match("PatientID", "A?C", "AC")
    assert not match("PatientID", "A?C", "ABBC")
    assert match("PatientID", "???", "ABC")


@pytest.mark.timeout(60)
def test_many_stars_match_in_linear_time() -> None:
    """Issue 10 item 13: each `*` became `.*` for re.fullmatch, which backtracks
    exponentially: 12 stars and a Z took 4.6 s against a 19-character name, 25 never ended
    (and held the GIL and the archive lock meanwhile)."""
    name = "Abcdefghij^Klmnopqr"  # 19 characters, no Z: the worst case, no match
    for stars in (12, 25, 32):
        query = "*" * stars + "Z"
        assert not match("PatientName", query, name)
        assert not match("StudyDescription", query, name)
        assert match("PatientName", query, name + "z")
    spread = "*a" * 16 + "*Z"  # stars that cannot collapse: 17 of them
    assert not match("StudyDescription", spread, "a" * 64)
    assert match("StudyDescription", spread, "a" * 64 + "Z")


def test_glob_matcher_agrees_with_a_regex_on_small_cases() -> None:
    """Every pattern over {a, b, *, ?} up to 5 characters against every text over {a, b} up
    to 6: the leftmost-placement matcher says what a (backtracking) regex says."""
    import itertools
    import re

    texts = ["".join(t) for n in range(1, 7) for t in itertools.product("ab", repeat=n)]
    for n in range(1, 6):
        for pattern in map("".join, itertools.product("ab*?", repeat=n)):
            regex = re.compile("".join(".*" if c == "*" else "." if c == "?" else c for c in pattern))
            flt = compile_filters({"StudyDescription": pattern})
            for text in texts:
                assert flt.matches({"StudyDescription": text}) == bool(regex.fullmatch(text)), (pattern, text)


def test_pn_wildcards_ignore_case_beyond_ascii() -> None:
    assert match("PatientName", "müller*", "MÜLLER^Hans")
    assert match("PatientName", "ΣΑΣ*", "σας^Νίκος")  # final sigma folds like any sigma
    assert match("PatientName", "?stanbul", "İstanbul")  # `?` is one character, even İ
    assert not match("StudyDescription", "müller*", "MÜLLER")  # exact case outside PN


def test_wildcard_values_are_capped_and_the_error_names_only_the_keyword() -> None:
    from pacsctl.dicom.matching import MAX_WILDCARD_VALUE_LENGTH, MAX_WILDCARDS, QueryValueTooComplexError

    too_many = "Doe" + "?" * (MAX_WILDCARDS + 1)
    too_long = "Doe" + "x" * MAX_WILDCARD_VALUE_LENGTH + "*"
    for query in (too_many, too_long, "*a" * (MAX_WILDCARDS + 1)):
        with pytest.raises(QueryValueTooComplexError) as err:
            compile_filters({"PatientName": query})
        assert err.value.keyword == "PatientName" and "PatientName" in str(err.value)
        assert "Doe" not in str(err.value) and "Doe" not in (err.value.hint or "")
        assert err.value.exit_code == EXIT_USAGE
    # runs of stars count once; values without wildcards are not capped here
    assert match("PatientName", "*" * 200 + "Doe*", "Doe^John")
    assert match("PatientID", "x" * 2000, "x" * 2000)


def test_text_vrs_keep_backslash_literal() -> None:
    # LT/ST/UT are single-valued: '\\' is text, not a value separator.
    assert match("ImageComments", "a\\b", "a\\b")
    assert not match("ImageComments", "a\\b", "a")


def test_multiple_values_in_query_are_alternatives() -> None:
    assert match("Modality", "CT\\MR", "MR")
    assert not match("Modality", "CT\\MR", "US")
    assert match("StudyDescription", "Head*\\*Chest", "CT Chest")


# ---- multi-valued records ----------------------------------------------------


def test_multi_valued_record_matches_if_any_element_matches() -> None:
    assert match("ModalitiesInStudy", "CT", ["CT", "SR"])
    assert match("ModalitiesInStudy", "SR", ["CT", "SR"])
    assert not match("ModalitiesInStudy", "MR", ["CT", "SR"])
    assert match("ModalitiesInStudy", "CT\\MR", ["MR", "SR"])
    assert not match("ModalitiesInStudy", "CT\\MR", ["US", "SR"])
    assert match("ModalitiesInStudy", "S?", ["CT", "SR"])
    assert not match("ModalitiesInStudy", "CT", ["", "MR"])


# ---- PN ------------------------------------------------------------------


def test_pn_is_case_insensitive() -> None:
    assert match("PatientName", "doe^john", "Doe^John")
    assert match("PatientName", "DOE*", "Doe^John")
    assert match("PatientName", "d?e^J*", "DOE^JOHN")
    assert not match("PatientName", "doe", "Doe^John")  # single value is not a prefix match


def test_pn_trailing_empty_components_are_insignificant() -> None:
    assert match("PatientName", "Doe^John", "Doe^John^^^")
    assert match("PatientName", "Doe^John^^", "Doe^John")
    assert match("PatientName", "Doe^John", "Doe^John==")


def test_pn_component_groups() -> None:
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert match("PatientName", "yamada^tarou", name)  # alphabetic group
    assert match("PatientName", "山田^太郎", name)  # any group, no '=' in the query
    assert match("PatientName", "やまだ*", name)
    assert match("PatientName", name, name)
    assert match("PatientName", "Yamada*=山田*", name)  # group by group
    assert match("PatientName", "=山田^太郎", name)  # empty group is universal
    assert not match("PatientName", "山田^太郎=Yamada^Tarou", name)  # wrong positions
    assert not match("PatientName", "=山田^次郎", name)


def test_pn_non_ascii_and_question_mark_is_one_unicode_character() -> None:
    assert match("PatientName", "Müller*", "Müller^Hans")
    assert match("PatientName", "müller^hans", "MÜLLER^HANS")
    assert match("PatientName", "M?ller^Hans", "Müller^Hans")
    assert not match("PatientName", "M??ller^Hans", "Müller^Hans")
    assert match("PatientName", "Buc^J?r?me", "Buc^Jérôme")
    assert match("PatientName", "Διονυσ*", "Διονυσιος")
    assert match("PatientName", "διονυσιος", "ΔΙΟΝΥΣΙΟΣ")


def test_composed_and_decomposed_accents_are_equal() -> None:
    decomposed = unicodedata.normalize("NFD", "Müller^Hans")
    assert decomposed != "Müller^Hans"
    assert match("PatientName", "Müller^Hans", decomposed)
    assert match("PatientName", "M?ller*", decomposed)
    assert match("InstitutionName", "Klinik Zürich", unicodedata.normalize("NFD", "Klinik Zürich"))


def test_pn_multi_valued_record_and_alternatives() -> None:
    assert match("OtherPatientNames", "Roe*", ["Doe^John", "Roe^Jane"])
    assert match("PatientName", "Roe*\\Doe*", "Doe^John")


def test_pn_exact_is_not_offered_because_matching_ignores_case() -> None:
    assert compile_filters({"PatientName": "Doe^John"}).exact("PatientName") is None


# ---- dates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "value", "expected"),
    [
        ("20240131", "20240131", True),
        ("20240131", "20240130", False),
        ("20240101-20240331", "20240101", True),
        ("20240101-20240331", "20240331", True),
        ("20240101-20240331", "20240215", True),
        ("20240101-20240331", "20240401", False),
        ("20240101-20240331", "20231231", False),
        ("-20240331", "19000101", True),
        ("-20240331", "20240401", False),
        ("20240101-", "20991231", True),
        ("20240101-", "20231231", False),
        ("20240101-20240101", "20240101", True),
        ("20240101\\20240301-20240331", "20240315", True),
        ("20240101\\20240301-20240331", "20240201", False),
        ("20240101-20240331", "2024.02.15", True),  # legacy stored form
        ("20240101-20240331", "garbage", False),  # a bad stored value never matches
        ("20240101-", "", False),
    ],
)
def test_date_matching(query: str, value: str, expected: bool) -> None:
    assert match("StudyDate", query, value) is expected


@pytest.mark.parametrize(
    "bad",
    ["2024", "2024-", "20241301", "20240230", "20240331-20240101", "-", "2024013", "2024*", "20240101--2"],
)
def test_invalid_dates_and_ranges_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        compile_filters({"StudyDate": bad})
    assert "YYYYMMDD" in (err.value.hint or "")


def test_reversed_date_range_says_so() -> None:
    with pytest.raises(UsageError, match="start after end"):
        compile_filters({"StudyDate": "20240331-20240101"})


# ---- times -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "value", "expected"),
    [
        ("101500", "101500", True),
        ("101500", "101500.123", True),  # 10:15:00 covers the whole second
        ("101500", "101501", False),
        ("1015", "101559.999999", True),  # partial precision: the whole minute
        ("1015", "101600", False),
        ("10", "105959", True),
        ("10-12", "100000", True),
        ("10-12", "125959.999", True),  # '12' as an upper bound is the whole hour
        ("10-12", "130000", False),
        ("10-12", "095959", False),
        ("-0800", "075959", True),
        ("-0800", "080100", False),
        ("1700-", "235959", True),
        ("1700-", "165959", False),
        ("101500.5-101500.6", "101500.55", True),
        ("101500.5-101500.6", "101500.7", False),
        ("2300-0100", "233000", True),  # wraps midnight
        ("2300-0100", "003000", True),
        ("2300-0100", "120000", False),
        ("10:15-10:30", "102000", True),  # ACR-NEMA colons in the query
        ("1015-1030", "10:20:00", True),  # ... and in the stored value
        ("10-12", "11", True),  # partial precision stored value
        ("10-12", "not a time", False),
    ],
)
def test_time_matching(query: str, value: str, expected: bool) -> None:
    assert match("StudyTime", query, value) is expected


@pytest.mark.parametrize("bad", ["25", "1", "1060", "10-1x", "101500.1234567", "10*", "-"])
def test_invalid_times_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        compile_filters({"StudyTime": bad})


# ---- date-times ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "value", "expected"),
    [
        ("20240131101500", "20240131101500", True),
        ("2024", "20240131101500.5", True),
        ("2023", "20240131101500.5", False),
        ("202401-202402", "20240229235959", True),  # month upper bound: end of Feb (leap)
        ("202401-202402", "20240301000000", False),
        ("20240131-", "20240131000000", True),
        ("-20240130", "20240131000000", False),
        # offsets are applied: 10:00+0100 is 09:00 UTC
        ("20240131090000+0000", "20240131100000+0100", True),
        ("20240131100000-0500", "20240131150000+0000", True),
        # '-' of an offset vs the range separator
        ("20240131-0500", "20240131120000-0500", True),
        ("1000-1200", "11000101", True),  # a range of years, not year 1000 at -12:00
        ("20240101-20240131", "2024", True),  # a partial stored value overlaps the range
        ("20240101-20240131", "20240201", False),
    ],
)
def test_datetime_matching(query: str, value: str, expected: bool) -> None:
    assert match("AcquisitionDateTime", query, value) is expected


@pytest.mark.parametrize("bad", ["20241301", "2024-2023", "20240131+1500", "2024013110150", "*2024"])
def test_invalid_datetimes_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        compile_filters({"AcquisitionDateTime": bad})


# ---- UIDs ------------------------------------------------------------------------


def test_uid_single_and_list_matching() -> None:
    assert match("StudyInstanceUID", "1.2.3", "1.2.3")
    assert not match("StudyInstanceUID", "1.2.3", "1.2.30")
    assert not match("StudyInstanceUID", "1.2", "1.2.3")
    assert match("StudyInstanceUID", "1.2.3\\1.2.4", "1.2.4")
    assert not match("StudyInstanceUID", "1.2.3\\1.2.4", "1.2.5")
    assert match("StudyInstanceUID", "1.2.3", "1.2.3\x00")  # NUL padding in stored value


@pytest.mark.parametrize("bad", ["1.2.*", "1.2.?", "1..2", "abc", "1.2.", "1" * 65])
def test_invalid_uids_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        compile_filters({"SeriesInstanceUID": bad})


def test_exact_values_for_index_shortcuts() -> None:
    f = compile_filters(
        {
            "PatientID": "ABC",
            "StudyInstanceUID": "1.2.3\\1.2.4",
            "SeriesInstanceUID": "",
            "AccessionNumber": "A*",
            "StudyDate": "20240101",
            "SeriesNumber": "3",
        }
    )
    assert f.exact("PatientID") == ["ABC"]
    assert f.exact("StudyInstanceUID") == ["1.2.3", "1.2.4"]
    assert f.exact("SeriesInstanceUID") is None  # universal
    assert f.exact("AccessionNumber") is None  # wildcard
    assert f.exact("StudyDate") is None  # ranges are not exact lookups
    assert f.exact("SeriesNumber") is None
    assert f.exact("Modality") is None  # not filtered on
    assert compile_filters({"PatientID": "B\\A"}).exact("PatientID") == ["B", "A"]
    assert set(f.keys) == {"PatientID", "StudyInstanceUID", "AccessionNumber", "StudyDate", "SeriesNumber"}


# ---- numbers -----------------------------------------------------------------------


def test_numeric_matching() -> None:
    assert match("InstanceNumber", "5", 5)
    assert match("InstanceNumber", "5", "5")
    assert match("InstanceNumber", " 05 ", 5)
    assert not match("InstanceNumber", "5", 50)
    assert match("InstanceNumber", "1\\5", 5)
    assert match("NumberOfStudyRelatedInstances", "120", 120)
    assert match("SliceThickness", "0.5", 0.5)  # DS
    assert match("SliceThickness", "0.50", "0.5")
    assert not match("SliceThickness", "0.5", 0.55)
    assert match("Rows", "512", 512)  # US
    assert not match("InstanceNumber", "5", "five")  # bad stored value never matches
    assert not match("InstanceNumber", "1", True)


@pytest.mark.parametrize(("key", "bad"), [("InstanceNumber", "5*"), ("InstanceNumber", "abc"),
                                          ("InstanceNumber", "1.5"), ("SliceThickness", "x"),
                                          ("Rows", "1-3")])
def test_invalid_numbers_are_usage_errors(key: str, bad: str) -> None:
    with pytest.raises(UsageError):
        compile_filters({key: bad})


# ---- what cannot be matched ------------------------------------------------------


def test_sequences_and_binary_cannot_be_matched_but_may_be_universal() -> None:
    with pytest.raises(UsageError, match="sequence"):
        compile_filters({"ReferencedStudySequence": "x"})
    with pytest.raises(UsageError, match="binary"):
        compile_filters({"PixelData": "x"})
    assert compile_filters({"ReferencedStudySequence": "", "PixelData": ""}).is_universal()


def test_non_string_query_value_is_rejected() -> None:
    with pytest.raises(UsageError):
        compile_filters({"InstanceNumber": 5})  # type: ignore[dict-item]


# ---- combined -------------------------------------------------------------------------


def test_all_criteria_must_match() -> None:
    f = compile_filters(
        {
            "PatientName": "müller*",
            "StudyDate": "20240101-20240331",
            "ModalitiesInStudy": "CT\\MR",
            "StudyInstanceUID": "",
        }
    )
    record = {
        "PatientName": "Müller^Hans",
        "StudyDate": "20240215",
        "ModalitiesInStudy": ["CT", "SR"],
        "StudyInstanceUID": "1.2.3",
        "NumberOfStudyRelatedInstances": 12,
    }
    assert f.matches(record) and f(record)
    assert not f.matches({**record, "StudyDate": "20240401"})
    assert not f.matches({**record, "ModalitiesInStudy": ["US"]})
    assert not f.matches({**record, "PatientName": "Mueller^Hans"})
    assert f.keys == ("PatientName", "StudyDate", "ModalitiesInStudy")
    assert "StudyInstanceUID" in f.criteria  # universal criteria are kept, just not tested
    assert "PatientName" in repr(f)
    matching = [r for r in [record, {**record, "StudyDate": "20230101"}] if f.matches(r)]
    assert matching == [record]
