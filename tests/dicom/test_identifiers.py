"""C-FIND identifiers: decoding requests in their own character set, encoding responses.

Requests go through pynetdicom's own encode/decode (what the SCP receives), and the
non-ASCII names come from pydicom's real charset test files.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom.dsutils import decode, encode

from pacsctl.dicom.identifiers import (
    InvalidIdentifierError,
    Query,
    build_response,
    parse_identifier,
)
from pacsctl.dicom.matching import LEVEL_KEYS, UNIQUE_KEY
from pacsctl.errors import UsageError

CHARSET_DIR = Path(pydicom.__file__).parent / "data" / "charset_files"


def over_the_wire(ds: Dataset, implicit: bool = True) -> Dataset:
    """Encode `ds` as a DIMSE data set and decode it as pynetdicom's SCP does (raw elements)."""
    data = encode(ds, implicit, True)
    assert data is not None
    return decode(BytesIO(data), implicit, True)


def raw_request(level: str, charset: str | list[str] | None, **elements: bytes) -> Dataset:
    """A request decoded from hand-written bytes, so any (mis)encoding can be sent."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    if charset is not None:
        ds.SpecificCharacterSet = charset
    raw = over_the_wire(ds, implicit=False)
    for keyword, value in elements.items():
        tag = Tag(tag_for_keyword(keyword))
        padded = value + (b" " if len(value) % 2 else b"")
        raw[tag] = RawDataElement(tag, dictionary_VR(tag), len(padded), padded, 0, False, True)
    return raw


def charset_file(name: str) -> Dataset:
    return pydicom.dcmread(CHARSET_DIR / name)


def request_from_file(name: str, level: str = "PATIENT") -> Dataset:
    """A C-FIND request carrying a real file's charset and patient name, sent over the wire."""
    src = charset_file(name)
    ds = Dataset()
    ds.SpecificCharacterSet = src.SpecificCharacterSet
    ds.PatientName = src.PatientName
    ds.PatientID = ""
    ds.QueryRetrieveLevel = level
    return over_the_wire(ds)


def reencoded(rsp: Dataset) -> Dataset:
    """The response as the SCU would see it: encoded by pynetdicom, decoded again."""
    back = over_the_wire(rsp)
    for elem in back:  # force decoding of every raw element
        _ = elem.value
    return back


def raw_bytes(rsp: Dataset, keyword: str) -> bytes:
    """The bytes pynetdicom puts on the wire for one element of `rsp`."""
    data = encode(rsp, False, True)
    assert data is not None
    back = read_dataset(BytesIO(data), False, True)
    item = back.get_item(tag_for_keyword(keyword))
    return bytes(item.value).rstrip(b" ")


# ---- parse_identifier -----------------------------------------------------------


def test_parse_identifier_levels_criteria_and_return_keys() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Doe*"
    ds.PatientID = ""
    ds.StudyDate = "20240101-20240331"
    ds.ModalitiesInStudy = ["CT", "MR"]
    ds.StudyInstanceUID = ["1.2.3", "1.2.4"]
    ds.NumberOfStudyRelatedInstances = None
    ds.ReferencedStudySequence = Sequence([Dataset()])
    ds.add_new(0x00091010, "LO", "private")  # never a key
    q = parse_identifier(over_the_wire(ds))
    assert q.level == "STUDY"
    assert dict(q.criteria) == {
        "PatientName": "Doe*",
        "StudyDate": "20240101-20240331",
        "ModalitiesInStudy": "CT\\MR",
        "StudyInstanceUID": "1.2.3\\1.2.4",
    }
    assert q.return_keys == (
        "StudyDate",
        "ModalitiesInStudy",
        "ReferencedStudySequence",
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "NumberOfStudyRelatedInstances",
    )
    assert q.charset == ("ISO_IR 100",)
    # The criteria compile as they are
    f = q.filter()
    assert f.exact("StudyInstanceUID") == ["1.2.3", "1.2.4"]
    assert f.matches(
        {"PatientName": "DOE^JANE", "StudyDate": "20240202", "ModalitiesInStudy": ["MR"],
         "StudyInstanceUID": "1.2.4"}
    )


def test_parse_identifier_accepts_in_memory_data_sets_too() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.SOPInstanceUID = "1.2.3"
    ds.InstanceNumber = 7
    q = parse_identifier(ds)
    assert q.level == "IMAGE"
    assert dict(q.criteria) == {"SOPInstanceUID": "1.2.3", "InstanceNumber": "7"}
    assert q.charset == ()


def test_level_is_read_leniently_from_the_wire() -> None:
    q = parse_identifier(raw_request("SERIES", None, QueryRetrieveLevel=b"series"))
    assert q.level == "SERIES"


@pytest.mark.parametrize("level", [None, "", "FRAME"])
def test_missing_or_bad_level_is_rejected(level: str | None) -> None:
    ds = Dataset()
    ds.PatientID = "1"
    if level is not None:
        ds.QueryRetrieveLevel = level
    with pytest.raises(InvalidIdentifierError) as err:
        parse_identifier(over_the_wire(ds))
    assert isinstance(err.value, UsageError)


def test_invalid_criteria_surface_when_compiling() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyDate = "20240331-20240101"
    q = parse_identifier(over_the_wire(ds))
    with pytest.raises(UsageError):
        q.filter()


# ---- decoding with the request's own character set -------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chrFren.dcm", "Buc^Jérôme"),
        ("chrGerm.dcm", "Äneas^Rüdiger"),
        ("chrGreek.dcm", "Διονυσιος"),
        ("chrRuss.dcm", "Люкceмбypг"),
        ("chrX1.dcm", "Wang^XiaoDong=王^小東"),
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        ("chrH32.dcm", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"),
        ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),
    ],
)
def test_request_is_decoded_with_its_own_charset(name: str, expected: str) -> None:
    q = parse_identifier(request_from_file(name))
    assert q.criteria["PatientName"] == expected
    declared = charset_file(name).SpecificCharacterSet
    assert list(q.charset) == ([declared] if isinstance(declared, str) else list(declared))


def test_wildcard_on_decoded_name_matches_stored_record() -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "PATIENT"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Buc^J?r?me*"
    q = parse_identifier(over_the_wire(ds))
    assert q.filter().matches({"PatientName": "BUC^JÉRÔME"})
    ds.PatientName = "Buc^Jérôme"
    assert raw_bytes(ds, "PatientName") == b"Buc^J\xe9r\xf4me"  # really sent as Latin-1


def test_request_without_charset_in_utf8_is_read_as_utf8() -> None:
    q = parse_identifier(raw_request("PATIENT", None, PatientName="Müller*".encode()))
    assert q.criteria["PatientName"] == "Müller*"
    assert q.charset == ()


def test_request_without_charset_in_latin1_is_read_as_latin1() -> None:
    q = parse_identifier(raw_request("PATIENT", None, PatientName="Müller*".encode("latin-1")))
    assert q.criteria["PatientName"] == "Müller*"


def test_mislabelled_latin1_under_utf8_is_still_read() -> None:
    q = parse_identifier(
        raw_request("PATIENT", "ISO_IR 192", PatientName="Jérôme*".encode("latin-1"),
                    StudyDescription="Schädel".encode())
    )
    assert q.criteria["PatientName"] == "Jérôme*"
    assert q.criteria["StudyDescription"] == "Schädel"


# ---- build_response --------------------------------------------------------------


STUDY_RECORD = {
    "PatientID": "PID1",
    "PatientName": "Doe^John",
    "PatientBirthDate": "19700101",
    "StudyInstanceUID": "1.2.826.0.1.3680043.2.1125.1",
    "StudyDate": "20240131",
    "StudyTime": "101500.123",
    "AccessionNumber": "",
    "ModalitiesInStudy": ["CT", "SR"],
    "NumberOfStudyRelatedInstances": 120,
    "NumberOfStudyRelatedSeries": 3,
    "StudyDescription": "CT Head",
}


def study_query(*keys: str, charset: tuple[str, ...] = ()) -> Query:
    return Query(level="STUDY", criteria={}, return_keys=keys, charset=charset)


def test_response_holds_exactly_the_return_keys_plus_level_and_unique_key() -> None:
    q = study_query("PatientName", "StudyDate", "StudyTime", "ModalitiesInStudy",
                    "NumberOfStudyRelatedInstances", "AccessionNumber", "ReferringPhysicianName")
    rsp = build_response(STUDY_RECORD, q)
    assert sorted(e.keyword for e in rsp) == sorted(
        ["QueryRetrieveLevel", "StudyInstanceUID", "PatientName", "StudyDate", "StudyTime",
         "ModalitiesInStudy",
         "NumberOfStudyRelatedInstances", "AccessionNumber", "ReferringPhysicianName"]
    )
    assert rsp.QueryRetrieveLevel == "STUDY"
    assert rsp.StudyInstanceUID == STUDY_RECORD["StudyInstanceUID"]
    assert list(rsp.ModalitiesInStudy) == ["CT", "SR"]
    assert rsp.NumberOfStudyRelatedInstances == 120
    assert not rsp.AccessionNumber  # empty in the record
    assert not rsp.ReferringPhysicianName  # missing from the record
    assert "SpecificCharacterSet" not in rsp
    back = reencoded(rsp)
    assert back["AccessionNumber"].is_empty and back["ReferringPhysicianName"].is_empty
    assert list(back.ModalitiesInStudy) == ["CT", "SR"]
    assert back.NumberOfStudyRelatedInstances == 120
    assert back.StudyTime == "101500.123"


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE"])
def test_each_level_answers_its_keys(level: str) -> None:
    record: dict[str, object] = {
        "PatientID": "PID1", "PatientName": "Doe^John", "NumberOfPatientRelatedStudies": 2,
        "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4", "Modality": "CT",
        "SeriesNumber": 3, "NumberOfSeriesRelatedInstances": 40, "SOPInstanceUID": "1.2.3.4.5",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "InstanceNumber": 7,
    }
    q = Query(level=level, criteria={}, return_keys=LEVEL_KEYS[level])
    back = reencoded(build_response(record, q))
    assert back.QueryRetrieveLevel == level
    assert back[UNIQUE_KEY[level]].value == record[UNIQUE_KEY[level]]
    assert {e.keyword for e in back} == {"QueryRetrieveLevel", *LEVEL_KEYS[level]}
    if level == "IMAGE":
        assert back.InstanceNumber == 7
    if level == "SERIES":
        assert back.SeriesNumber == 3 and back.NumberOfSeriesRelatedInstances == 40


def test_numbers_are_formatted_validly() -> None:
    q = study_query("NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries")
    rsp = build_response({**STUDY_RECORD, "NumberOfStudyRelatedSeries": "3"}, q)
    assert rsp.NumberOfStudyRelatedSeries == 3
    rsp = build_response({**STUDY_RECORD, "NumberOfStudyRelatedInstances": "n/a"}, q)
    assert rsp.NumberOfStudyRelatedInstances is None  # never an invalid IS
    series = Query(level="SERIES", criteria={}, return_keys=("SliceThickness", "Rows"))
    rsp = build_response({"SeriesInstanceUID": "1.2", "SliceThickness": 0.1 + 0.2, "Rows": 512}, series)
    assert len(str(rsp.SliceThickness)) <= 16 and float(rsp.SliceThickness) == pytest.approx(0.3)
    back = reencoded(rsp)
    assert back.Rows == 512 and float(back.SliceThickness) == pytest.approx(0.3)


def test_sequence_return_key_is_an_empty_sequence() -> None:
    rsp = build_response(STUDY_RECORD, study_query("ReferencedStudySequence"))
    assert len(rsp.ReferencedStudySequence) == 0
    assert len(reencoded(rsp).ReferencedStudySequence) == 0


# ---- response character sets --------------------------------------------------------


def test_ascii_response_keeps_the_request_charset_or_none() -> None:
    q = study_query("PatientName")
    assert "SpecificCharacterSet" not in build_response(STUDY_RECORD, q)
    assert build_response(STUDY_RECORD, q, "ISO_IR 100").SpecificCharacterSet == "ISO_IR 100"
    q = study_query("PatientName", charset=("", "ISO 2022 IR 87"))
    assert list(build_response(STUDY_RECORD, q).SpecificCharacterSet) == ["", "ISO 2022 IR 87"]


def test_latin1_request_gets_latin1_response() -> None:
    q = parse_identifier(request_from_file("chrFren.dcm"))
    rsp = build_response({"PatientID": "P1", "PatientName": "Buc^Jérôme"}, q)
    assert rsp.SpecificCharacterSet == "ISO_IR 100"
    assert raw_bytes(rsp, "PatientName") == b"Buc^J\xe9r\xf4me"
    assert str(reencoded(rsp).PatientName) == "Buc^Jérôme"


def test_latin1_request_with_values_outside_latin1_gets_utf8() -> None:
    q = study_query("PatientName", "StudyDescription", charset=("ISO_IR 100",))
    record = {**STUDY_RECORD, "PatientName": "Διονυσιος", "StudyDescription": "Schädel"}
    rsp = build_response(record, q)
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert raw_bytes(rsp, "PatientName") == "Διονυσιος".encode()
    back = reencoded(rsp)
    assert str(back.PatientName) == "Διονυσιος" and back.StudyDescription == "Schädel"


@pytest.mark.parametrize("charset", [(), ("ISO_IR 192",), ("ISO_IR 6",)])
def test_non_ascii_without_a_fitting_request_charset_is_utf8(charset: tuple[str, ...]) -> None:
    rsp = build_response({**STUDY_RECORD, "PatientName": "Müller^Hans"}, study_query("PatientName", charset=charset))
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert raw_bytes(rsp, "PatientName") == "Müller^Hans".encode()


def test_request_charset_argument_overrides_the_query() -> None:
    q = study_query("PatientName", charset=("ISO_IR 192",))
    rsp = build_response({**STUDY_RECORD, "PatientName": "Buc^Jérôme"}, q, "ISO_IR 100")
    assert rsp.SpecificCharacterSet == "ISO_IR 100"


@pytest.mark.parametrize("name", ["chrGreek.dcm", "chrH31.dcm", "chrI2.dcm", "chrX1.dcm", "chrRuss.dcm"])
def test_names_from_real_files_round_trip_in_the_request_charset(name: str) -> None:
    src = charset_file(name)
    q = parse_identifier(request_from_file(name))
    rsp = build_response({"PatientID": "P1", "PatientName": str(src.PatientName)}, q)
    declared = src.SpecificCharacterSet
    assert rsp.SpecificCharacterSet == declared  # the request's set carries its own names
    assert str(reencoded(rsp).PatientName) == str(src.PatientName)


def test_japanese_name_for_a_latin1_request_falls_back_to_utf8() -> None:
    name = str(charset_file("chrH31.dcm").PatientName)
    q = Query(level="PATIENT", criteria={}, return_keys=("PatientName",), charset=("ISO_IR 100",))
    rsp = build_response({"PatientID": "P1", "PatientName": name}, q)
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert raw_bytes(rsp, "PatientName") == name.encode()
    assert str(reencoded(rsp).PatientName) == name


def test_end_to_end_find_over_records() -> None:
    """Request over the wire -> filter index records -> responses that decode back."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "müller*"
    ds.StudyDate = "20240101-"
    ds.ModalitiesInStudy = "CT"
    ds.NumberOfStudyRelatedInstances = None
    q = parse_identifier(over_the_wire(ds))
    records = [
        {"PatientID": "1", "PatientName": "Müller^Hans", "StudyInstanceUID": "1.1",
         "StudyDate": "20240301", "ModalitiesInStudy": ["CT", "SR"], "NumberOfStudyRelatedInstances": 5},
        {"PatientID": "2", "PatientName": "Müller^Jörg", "StudyInstanceUID": "1.2",
         "StudyDate": "20231231", "ModalitiesInStudy": ["CT"], "NumberOfStudyRelatedInstances": 1},
        {"PatientID": "3", "PatientName": "MÜLLER^Zoë", "StudyInstanceUID": "1.3",
         "StudyDate": "20240102", "ModalitiesInStudy": ["MR", "CT"], "NumberOfStudyRelatedInstances": 9},
    ]
    f = q.filter()
    responses = [reencoded(build_response(r, q)) for r in records if f.matches(r)]
    assert [r.StudyInstanceUID for r in responses] == ["1.1", "1.3"]
    assert [str(r.PatientName) for r in responses] == ["Müller^Hans", "MÜLLER^Zoë"]
    assert all(r.SpecificCharacterSet == "ISO_IR 100" for r in responses)
    assert [r.NumberOfStudyRelatedInstances for r in responses] == [5, 9]
