"""Inputs for the anonymizer's tests: pydicom's real files, and instances that refer to each other."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary, generate_uid

from tests.helpers import TESTDATA_DIR

# CT, MR, RT plan / dose / structure set, SR, JPEG 2000, RLE and JPEG-LS compressed, big endian.
REAL_FILES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "rtplan.dcm",
    "rtdose.dcm",
    "rtstruct.dcm",
    "test-SR.dcm",
    "JPEG2000.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
)

PATIENT = {"PatientName": "Doe^Johanna^Q", "PatientID": "PID-4711", "PatientBirthDate": "19620314",
           "AccessionNumber": "ACC998877", "InstitutionName": "Saint Elsewhere Hospital"}


def real_file(name: str) -> Path:
    return TESTDATA_DIR / name


def header_bytes(data: bytes) -> bytes:
    """The file's bytes outside Pixel Data (everything before it and after it)."""
    fp = io.BytesIO(data)
    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    start = fp.tell()
    if start >= len(data):
        return data
    full = pydicom.dcmread(io.BytesIO(data), force=True)
    pixel = full.get((0x7FE0, 0x0010))
    del ds
    if pixel is None:
        return data
    # Pixel Data is the last element of these files; keep its header, drop its value.
    return data[: start + 12]


def private_uids(ds: Dataset) -> set[str]:
    """Every UID value in `ds` at any depth that is not a registered DICOM UID (SOP classes,
    transfer syntaxes, coding schemes): the ones that identify instances, studies and such."""
    found: set[str] = set()
    for elem in ds.iterall():
        if elem.VR != "UI" or elem.value in (None, ""):
            continue
        values = elem.value if isinstance(elem.value, (list, tuple)) or elem.VM > 1 else [elem.value]
        for value in values:
            if str(value) not in UID_dictionary and not _names_a_scheme_or_class(elem.keyword):
                found.add(str(value))
    return found


def _names_a_scheme_or_class(keyword: str) -> bool:
    return "ClassUID" in keyword or "TransferSyntax" in keyword or keyword == "CodingSchemeUID"


def contains_uid(data: bytes, uid: str) -> bool:
    """Whether `uid` occurs in `data` as a whole UID (not as the prefix of a longer one)."""
    return re.search(re.escape(uid.encode()) + rb"(?![0-9.])", data) is not None


def part10(ds: Dataset) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def linked_pair() -> tuple[Dataset, Dataset]:
    """An image and a second image that refers to it from deep inside sequences (source image,
    a referenced series, a private sequence), one patient, one study, with identifying text."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    first = _image(study, series, frame, 1)
    second = _image(study, generate_uid(), frame, 2)
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.SourceImageSequence = Sequence([ref])
    series_item = Dataset()
    series_item.SeriesInstanceUID = series
    deep = Dataset()
    deep.ReferencedSOPClassUID = first.SOPClassUID
    deep.ReferencedSOPInstanceUID = first.SOPInstanceUID
    series_item.ReferencedInstanceSequence = Sequence([deep])
    evidence = Dataset()
    evidence.StudyInstanceUID = study
    evidence.ReferencedSeriesSequence = Sequence([series_item])
    second.add_new(0x0040A375, "SQ", Sequence([evidence]))  # CurrentRequestedProcedureEvidenceSequence
    second.add_new(0x00290010, "LO", "ACME PRIVATE")
    private_item = Dataset()
    private_item.PatientName = PATIENT["PatientName"]
    second.add_new(0x00291001, "SQ", Sequence([private_item]))
    return first, second


def _image(study: str, series: str, frame: str, number: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = pydicom.uid.CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.Modality = "CT"
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "20240510", "20240510", "20240510"
    ds.StudyTime = "101500"
    ds.PatientAge = "062Y"
    ds.PatientSex = "F"
    ds.StudyDescription = "CT chest Doe follow-up"
    ds.ImageComments = "for Dr. House"
    ds.InstanceNumber = number
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 2, 2, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = b"\x00\x01" * 4
    return ds
