"""DICOM media (PS3.10, PS3.11 General Purpose CD-R / USB interchange): the files under file IDs
of at most 8 upper-case characters per component (`PT000000/ST000000/SE000000/IM000000`, ISO
9660 level 1), and a DICOMDIR with PATIENT / STUDY / SERIES / leaf records, written by pydicom's
`FileSet`.

The records are built from each instance's header (read without its pixel data); the files are
the exported bytes, placed at the file IDs the File-set assigned. Type 1 record keys an instance
lacks (Study ID, Study Date/Time, Series or Instance Number) are invented for its record, as
DCMTK's `dcmmkdir --invent` does: the instance itself is not changed.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import UID

FILE_ID_COMPONENT = re.compile(r"^[A-Z0-9_]{1,8}$")
MAX_DEPTH = 8  # components of a file ID (PS3.10 8.5)
_INVENTED = {  # keyword -> value for a record that would lack it (Type 1 in PS3.3 F.5)
    "PatientID": "UNKNOWN",
    "StudyDate": "19000101",
    "StudyTime": "000000",
    "StudyID": "1",
    "SeriesNumber": "1",
    "InstanceNumber": "1",
    "Modality": "OT",
}


def valid_file_id(file_id: str) -> bool:
    """Whether `file_id` (components joined by `/`) keeps PS3.10/PS3.12's rules: at most 8
    components of 1-8 characters from A-Z, 0-9 and `_`."""
    parts = file_id.split("/")
    return 0 < len(parts) <= MAX_DEPTH and all(FILE_ID_COMPONENT.match(p) for p in parts)


@dataclass(frozen=True)
class MediaHeader:
    """What the DICOMDIR needs of one exported instance: its header and the transfer syntax its
    exported file is in (differs from the archived one when transcoded)."""

    header: Dataset
    transfer_syntax_uid: str


def read_header(path: Path | str) -> Dataset:
    """The instance's data set without pixel data (enough for its directory records)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path, stop_before_pixels=True)


def build(headers: Iterable[MediaHeader], fileset_id: str = "PACSCTL") -> tuple[bytes, dict[str, str]]:
    """The DICOMDIR's bytes and each SOP Instance UID's file ID (`/`-separated), for instances
    given by their headers. Raises ValueError naming the instance pydicom cannot record."""
    fs = FileSet()
    fs.ID = fileset_id[:16].upper()
    for item in headers:
        ds = _recordable(item)
        try:
            fs.add(ds)
        except ValueError as exc:
            raise ValueError(f"instance {ds.get('SOPInstanceUID', '')}: {exc}") from None
    scratch = Path(tempfile.mkdtemp(prefix="pacsctl-dicomdir-"))
    try:
        fs.write(scratch)  # writes the headers only (small) beside the DICOMDIR we keep
        data = (scratch / "DICOMDIR").read_bytes()
        ids = {str(inst.SOPInstanceUID): "/".join(Path(inst.FileID).parts) for inst in fs}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        fs.clear()
    return data, ids


def _recordable(item: MediaHeader) -> Dataset:
    ds = item.header
    ds.file_meta.TransferSyntaxUID = UID(item.transfer_syntax_uid)
    for keyword, value in _INVENTED.items():
        if str(ds.get(keyword, "") or "").strip() == "":
            setattr(ds, keyword, value)
    for elem in ds:  # ACR-NEMA's 1997.04.24 and 14:04:38 (still met) as DICOM's DA and TM
        if elem.VR in ("DA", "TM") and isinstance(elem.value, str) and elem.value:
            elem.value = (
                elem.value.replace(".", "").replace(":", "")
                if elem.VR == "DA"
                else elem.value.replace(":", "")
            )
    return ds
