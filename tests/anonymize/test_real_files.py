"""Real files (pydicom's CT, MR, RT, SR, compressed, big endian) and instances that refer to each
other: nothing identifying survives in the output bytes, references line up, keys behave."""

from __future__ import annotations

import io

import pydicom
import pytest

from pacsctl.anonymize.deidentify import Anonymizer, Status
from pacsctl.anonymize.profile import BurnedIn, Options
from tests.anonymize.helpers import PATIENT, contains_uid, REAL_FILES, header_bytes, linked_pair, part10, private_uids, real_file

KEY = b"a key for the tests"
CODING_SCHEMES = {"TEST"}


def _identifying_strings(ds: pydicom.Dataset) -> list[str]:
    found = []
    for keyword in ("PatientID", "PatientBirthDate", "AccessionNumber", "OtherPatientIDs"):
        value = str(ds.get(keyword, "") or "")
        if len(value) >= 4:
            found.append(value)
    name = str(ds.get("PatientName", "") or "")
    found += [part for part in name.replace("=", "^").split("^") if len(part) >= 4]
    # test-SR.dcm's patient is called "Test", and so is a coding scheme in it (a code, kept).
    return [text for text in found if text.upper() not in CODING_SCHEMES]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_file_leaves_no_uid_or_identifier_outside_pixel_data(name: str) -> None:
    data = real_file(name).read_bytes()
    original = pydicom.dcmread(io.BytesIO(data), force=True)
    outcome = Anonymizer(KEY).file_bytes(data)
    assert outcome.status is Status.WRITTEN, outcome.reason
    assert outcome.data is not None
    out = pydicom.dcmread(io.BytesIO(outcome.data))
    header = header_bytes(outcome.data)
    for uid in private_uids(original):
        assert not contains_uid(header, uid), f"an original UID survives in {name}"
    for text in _identifying_strings(original):
        assert text.encode() not in header and text.upper().encode() not in header.upper()
    assert out.SOPClassUID == original.SOPClassUID
    if "TransferSyntaxUID" in original.file_meta:
        assert out.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert outcome.data[:128] == b"\x00" * 128
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert not any(elem.tag.is_private for elem in out.iterall())
    if "PixelData" in original:
        assert out.PixelData == original.PixelData  # pixels untouched, compressed or not


def test_references_line_up_and_private_sequences_go() -> None:
    first, second = linked_pair()
    anonymizer = Anonymizer(KEY)
    out1 = pydicom.dcmread(io.BytesIO(anonymizer.file_bytes(part10(first)).data or b""))
    out2 = pydicom.dcmread(io.BytesIO(anonymizer.file_bytes(part10(second)).data or b""))
    assert out1.SOPInstanceUID.startswith("2.25.") and out1.SOPInstanceUID != first.SOPInstanceUID
    assert out2.SourceImageSequence[0].ReferencedSOPInstanceUID == out1.SOPInstanceUID
    evidence = out2[0x0040A375].value[0]
    assert evidence.StudyInstanceUID == out1.StudyInstanceUID == out2.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == out1.SeriesInstanceUID
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == out1.SOPInstanceUID
    assert out1.FrameOfReferenceUID == out2.FrameOfReferenceUID != first.FrameOfReferenceUID
    assert out1.PatientID == out2.PatientID and out1.PatientID.startswith("ANON")
    assert (0x0029, 0x0010) not in out2 and (0x0029, 0x1001) not in out2
    for text in PATIENT.values():
        assert text.encode() not in part10(out2)


def test_same_key_gives_identical_bytes_and_another_key_shares_no_uid() -> None:
    inputs = [real_file(n).read_bytes() for n in REAL_FILES] + [part10(ds) for ds in linked_pair()]
    first = [Anonymizer(KEY).file_bytes(d).data for d in inputs]
    again = [Anonymizer(KEY).file_bytes(d).data for d in inputs]
    other = [Anonymizer(b"another key").file_bytes(d).data for d in inputs]
    assert first == again
    uids_first = set().union(*(private_uids(pydicom.dcmread(io.BytesIO(d or b""))) for d in first))
    uids_other = set().union(*(private_uids(pydicom.dcmread(io.BytesIO(d or b""))) for d in other))
    assert uids_first and not uids_first & uids_other


def test_uid_is_keyed_hmac_in_2_25_form() -> None:
    import hashlib
    import hmac

    anonymizer = Anonymizer(KEY)
    new = anonymizer.identity.uid("1.2.3.4")
    digest = hmac.new(KEY, b"uid\0" + b"1.2.3.4", hashlib.sha256).digest()
    assert new == "2.25." + str(int.from_bytes(digest[:16], "big"))
    assert len(new) <= 64


def test_residual_scan_fails_a_file_that_still_names_the_patient() -> None:
    first, _ = linked_pair()
    first.Manufacturer = "Johanna's scanner"  # not in the table: kept, so the scan must catch it
    outcome = Anonymizer(KEY).file_bytes(part10(first))
    assert outcome.status is Status.LEAK
    assert "Manufacturer" in outcome.reason and "Johanna" not in outcome.reason
    assert outcome.data is None


def test_burned_in_text_is_refused_unless_allowed() -> None:
    first, _ = linked_pair()
    first.BurnedInAnnotation = "YES"
    data = part10(first)
    refused = Anonymizer(KEY).file_bytes(data)
    assert refused.status is Status.REFUSED and refused.data is None
    warned = Anonymizer(KEY, Options(burned_in=BurnedIn.WARN)).file_bytes(data)
    assert warned.status is Status.WRITTEN and warned.warning
    allowed = Anonymizer(KEY, Options(burned_in=BurnedIn.ALLOW)).file_bytes(data)
    assert allowed.status is Status.WRITTEN and not allowed.warning
    first.BurnedInAnnotation = "NO"
    first.Modality = "US"
    assert Anonymizer(KEY).file_bytes(part10(first)).status is Status.WRITTEN
    del first.BurnedInAnnotation
    assert Anonymizer(KEY).file_bytes(part10(first)).status is Status.REFUSED


def test_elements_after_pixel_data_are_read_and_handled() -> None:
    """Pixel Data is copied raw only when nothing follows it: private elements after it (group
    7FE1) still go."""
    first, _ = linked_pair()
    first.add_new(0x7FE10010, "LO", "ACME TRAILER")
    first.add_new(0x7FE11001, "LO", PATIENT["PatientName"])
    outcome = Anonymizer(KEY).file_bytes(part10(first))
    assert outcome.status is Status.WRITTEN and outcome.data is not None
    out = pydicom.dcmread(io.BytesIO(outcome.data))
    assert (0x7FE1, 0x1001) not in out and (0x7FE1, 0x0010) not in out
    assert out.PixelData == first.PixelData
    assert b"Johanna" not in outcome.data


@pytest.mark.parametrize("name", REAL_FILES)
def test_fast_writer_writes_what_pydicom_writes(name: str) -> None:
    """encoding.encode copies raw elements itself: the data set bytes must be pydicom's."""
    import struct

    from pacsctl.anonymize import encoding

    def body(data: bytes) -> bytes:
        (meta_length,) = struct.unpack_from("<L", data, 140)
        return data[144 + meta_length :]

    data = real_file(name).read_bytes()
    outcome = Anonymizer(KEY).file_bytes(data)
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    Anonymizer(KEY).dataset(ds)
    reference = encoding._encode_with_pydicom(ds, encoding.transfer_syntax_of(ds))
    assert body(outcome.data or b"") == body(reference)
