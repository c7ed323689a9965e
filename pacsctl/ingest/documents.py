"""A PDF (or CDA) document filed with a study as DICOM says non-image data should be: an
Encapsulated PDF (or CDA) Storage instance in a new series of that study (PS3.3 A.45, A.76),
stored through the archive's ingest like everything else (`attach`).

Patient and study attributes are copied from an archived instance of the study; the document
goes in byte for byte (padded to an even length with one NUL, its true length in Encapsulated
Document Length), so DCMTK's `dcm2pdf` (and `document_bytes`) give back the identical file.
"""

from __future__ import annotations

import datetime as dt
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

from pacsctl.archive.archive import Archive, IngestResult
from pacsctl.errors import UsageError

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
ENCAPSULATED_CDA = "1.2.840.10008.5.1.4.1.1.104.2"
# Encapsulated document SOP classes and the file name extension of their MIME types.
DOCUMENT_CLASSES = {
    ENCAPSULATED_PDF: ".pdf",
    ENCAPSULATED_CDA: ".xml",
    "1.2.840.10008.5.1.4.1.1.104.3": ".stl",
    "1.2.840.10008.5.1.4.1.1.104.4": ".obj",
    "1.2.840.10008.5.1.4.1.1.104.5": ".mtl",
}
MAX_DOCUMENT = 1 << 30  # Encapsulated Document is OB with a 32-bit length; a report is far smaller

# Copied from the study's archived instance (Patient, General Study and Patient Study modules).
_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)


@dataclass(frozen=True)
class Attached:
    """The stored document instance."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    result: IngestResult


def document_class(data: bytes) -> tuple[str, str]:
    """The SOP class and MIME type for a document's bytes: PDF, or an HL7 CDA (XML)."""
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return ENCAPSULATED_PDF, "application/pdf"
    if head.startswith(b"<?xml") or head.startswith(b"<ClinicalDocument"):
        if b"ClinicalDocument" in data[:4096]:
            return ENCAPSULATED_CDA, "text/XML"
    raise UsageError(
        "the file is neither a PDF nor an HL7 CDA document", hint="attach takes .pdf or CDA .xml"
    )


def attach(archive: Archive, document: Path, study_uid: str, title: str | None = None) -> Attached:
    """Store `document` as a new instance in a new series of the archived study `study_uid`."""
    data = document.read_bytes()
    if len(data) > MAX_DOCUMENT:
        raise UsageError(f"{document.name} is larger than 1 GiB", hint="attach is for reports and documents")
    sop_class, mime = document_class(data)
    source = _study_instance(archive, study_uid)
    ds = _document_dataset(source, data, sop_class, mime, title or document.stem)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    [result] = archive.ingest([(buffer.getvalue(), str(document))])
    return Attached(ds.SOPInstanceUID, ds.SeriesInstanceUID, study_uid, result)


def _study_instance(archive: Archive, study_uid: str) -> Dataset:
    records = [r for r in archive.index.instances(study_uids=[study_uid]) if r.get("path")]
    if not records:
        raise UsageError(f"the archive holds no study {study_uid}", hint="see `pacsctl ls`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(archive.path_of(records[0]["path"]), stop_before_pixels=True)


def _document_dataset(source: Dataset, data: bytes, sop_class: str, mime: str, title: str) -> Dataset:
    now = dt.datetime.now().astimezone()
    ds = Dataset()
    for keyword in _STUDY_KEYWORDS:
        if keyword in source:
            ds[keyword] = source[keyword]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesNumber = 9000 + now.microsecond % 1000  # a number apart from the study's image series
    ds.SeriesDescription = title[:64]
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.ConversionType = "WSD"  # SC Equipment: made on a workstation
    ds.Manufacturer = ""
    ds.BurnedInAnnotation = "YES"  # a report names the patient in its text
    ds.ConceptNameCodeSequence = []
    ds.DocumentTitle = title[:64]
    ds.MIMETypeOfEncapsulatedDocument = mime
    if sop_class == ENCAPSULATED_CDA:
        ds.HL7InstanceIdentifier = ""
    ds.EncapsulatedDocumentLength = len(data)
    ds.EncapsulatedDocument = data + (b"\0" if len(data) % 2 else b"")
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
    ):
        if keyword not in ds:  # Type 2: present, empty when the study has no value
            setattr(ds, keyword, "")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def document_bytes(ds: Dataset) -> bytes:
    """The document an encapsulated document instance holds, without its padding: cut to
    Encapsulated Document Length when given, else one trailing NUL of a PDF dropped."""
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if isinstance(length, int) and 0 <= length <= len(data):
        return data[:length]
    if data.endswith(b"\0") and data.rstrip(b"\0").rstrip().endswith(b"%%EOF"):
        return data[:-1]
    return data
