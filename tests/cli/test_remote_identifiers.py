"""The identifiers `pacsctl query/move/get` build and the answers they decode (no network)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from pacsctl.config import Node
from pacsctl.remote.find import build_identifier, response_record, return_keys
from pacsctl.remote.retrieve import RetrieveSummary, retrieve_identifiers
from pacsctl.errors import UsageError

# A node nobody listens on: the cases below must not need the network.
NOWHERE = Node(name="x", aet="X", host="127.0.0.1", port=9)


def _wire(elements: list[tuple[int, str, bytes]]) -> Dataset:
    """A data set as it comes off the wire: implicit VR little endian, raw (undecoded) values."""
    out = bytearray()
    for tag, _vr, value in sorted(elements):
        if len(value) % 2:
            value += b" "
        out += (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little")
        out += len(value).to_bytes(4, "little") + value
    return read_dataset(DicomBytesIO(bytes(out)), is_implicit_VR=True, is_little_endian=True)


def test_study_identifier_has_level_keys_and_filters() -> None:
    ds = build_identifier("STUDY", {"PatientName": "Doe*", "ModalitiesInStudy": "CT\\MR"},
                          return_keys("STUDY"))
    assert ds.QueryRetrieveLevel == "STUDY"
    assert str(ds.PatientName) == "Doe*" and list(ds.ModalitiesInStudy) == ["CT", "MR"]
    assert ds.StudyInstanceUID == "" and "NumberOfStudyRelatedInstances" in ds
    assert "SpecificCharacterSet" not in ds


def test_non_ascii_filter_declares_utf8_and_round_trips() -> None:
    ds = build_identifier("PATIENT", {"PatientName": "Müller*"}, return_keys("PATIENT"))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    from pydicom.filewriter import write_dataset

    write_dataset(fp, ds)
    assert "Müller*".encode() in fp.getvalue()


def test_bad_numeric_filter_is_usage_error() -> None:
    with pytest.raises(UsageError):
        build_identifier("IMAGE", {"Rows": "many"})


@pytest.mark.parametrize("charset, raw", [
    (b"ISO_IR 100", "Buc^Jérôme".encode("latin-1")),
    (None, "Buc^Jérôme".encode("latin-1")),        # peer omitted the character set
    (None, "Buc^Jérôme".encode("utf-8")),          # ... and answered in UTF-8
    (b"ISO_IR 192", "Buc^Jérôme".encode("latin-1")),  # declared UTF-8, sent Latin-1
])
def test_answers_decode_with_their_own_charset(charset: bytes | None, raw: bytes) -> None:
    elements = [(0x00080052, "CS", b"STUDY"), (0x00100010, "PN", raw),
                (0x00201208, "IS", b"12"), (0x00080061, "CS", b"CT\\SR"),
                (0x0020000D, "UI", b"1.2.3\x00")]
    if charset:
        elements.append((0x00080005, "CS", charset))
    record = response_record(_wire(elements), "STUDY", return_keys("STUDY"))
    assert record["PatientName"] == "Buc^Jérôme"
    assert record["NumberOfStudyRelatedInstances"] == 12
    assert record["ModalitiesInStudy"] == ["CT", "SR"]
    assert record["StudyInstanceUID"] == "1.2.3"
    assert record["AccessionNumber"] == ""  # asked for, not answered: empty, as in `ls`
    assert set(record) == set(return_keys("STUDY"))


def test_unique_key_selection_needs_no_find() -> None:
    idents = retrieve_identifiers(NOWHERE, "STUDY", {"StudyInstanceUID": "1.2.3\\1.2.4"}, "ME")
    assert [(i.QueryRetrieveLevel, i.StudyInstanceUID) for i in idents] == [("STUDY", "1.2.3"), ("STUDY", "1.2.4")]
    series = retrieve_identifiers(NOWHERE, "SERIES", {"StudyInstanceUID": "1.2", "SeriesInstanceUID": "1.2.5"}, "ME")
    assert [(s.StudyInstanceUID, s.SeriesInstanceUID) for s in series] == [("1.2", "1.2.5")]


def test_summary_never_trusts_the_final_status_alone() -> None:
    clean = RetrieveSummary(matched=1, completed=3, status=0, received=3, stored=2, duplicates=1,
                            store_failed=0, expected=3)
    assert clean.ok
    short = RetrieveSummary(matched=1, completed=3, status=0, received=2, stored=2, duplicates=0,
                            store_failed=0, expected=3, missing=["1.2.3"])
    assert not short.ok
    miscounted = RetrieveSummary(matched=1, completed=3, status=0, received=2, stored=2,
                                 duplicates=0, store_failed=0)
    assert not miscounted.ok
    refused = RetrieveSummary(matched=1, status=0xC000)
    assert refused.refused and not refused.ok
    partial = RetrieveSummary(matched=1, completed=2, failed=1, status=0xB000)
    assert not partial.refused and not partial.ok


def test_a_refused_retrieve_is_a_typed_network_error() -> None:
    """0xA801 and other outright refusals are network failures (exit 4), the unknown
    destination told apart (a migration fails that study for good instead of retrying)."""
    from pacsctl.errors import EXIT_NETWORK, NetworkFailure
    from pacsctl.remote.retrieve import refusal_error

    unknown = refusal_error(RetrieveSummary(matched=1, status=0xA801), NOWHERE, "DEST")
    assert unknown is not None and unknown.exit_code == EXIT_NETWORK
    assert unknown.failure is NetworkFailure.DESTINATION_UNKNOWN and "0xA801" in str(unknown)
    other = refusal_error(RetrieveSummary(matched=1, status=0xC000), NOWHERE, "DEST")
    assert other is not None and other.failure is NetworkFailure.STATUS
    assert refusal_error(RetrieveSummary(matched=1, completed=2, status=0), NOWHERE, "DEST") is None


def test_summary_keeps_the_worst_final_status() -> None:
    from pacsctl.net.types import RetrieveCounts

    summary = RetrieveSummary()
    for status in (0x0000, 0xC000, 0xB000, 0x0000):
        summary.add(RetrieveCounts(status=status))
    assert summary.status == 0xC000 and not summary.ok


def test_get_contexts_offer_each_stored_syntax_apart() -> None:
    from pacsctl.net.sending import get_contexts

    ct, mr = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
    contexts = get_contexts([ct, mr, ct])
    assert contexts is not None and len(contexts) <= 127
    j2k = [c for c in contexts if c.transfer_syntax == ["1.2.840.10008.1.2.4.91"]]
    assert {c.abstract_syntax for c in j2k} == {ct, mr}
    assert get_contexts([ct, ""]) is None  # an unknown class: the default set, not none
    assert get_contexts([]) is None


def test_answers_that_contradict_a_filter_are_dropped_unjudgeable_kept() -> None:
    from pacsctl.dicom.matching import compile_filters
    from pacsctl.remote.find import agrees

    flt = compile_filters({"PatientID": "4MR1", "StudyDate": "20240101-20240131", "PatientName": "doe*"})
    assert agrees(flt, {"PatientID": "4MR1", "StudyDate": "20240115", "PatientName": "DOE^J"})
    assert not agrees(flt, {"PatientID": "1CT1", "StudyDate": "20240115", "PatientName": "DOE^J"})
    assert not agrees(flt, {"PatientID": "4MR1", "StudyDate": "20230101", "PatientName": "DOE^J"})
    assert agrees(flt, {"PatientID": "4MR1", "StudyDate": "", "PatientName": ""})  # not answered
