"""Turn a parsed instance into the flat index record (DICOM keywords, decoded values)."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from pacsctl.storage.index import INSTANCE_FIELDS, PATIENT_FIELDS, SERIES_FIELDS, STUDY_FIELDS

_INTEGER_KEYS = {"SeriesNumber", "InstanceNumber"}
_DATASET_KEYS = [
    k for k in PATIENT_FIELDS + STUDY_FIELDS + SERIES_FIELDS + INSTANCE_FIELDS
    if k not in ("TransferSyntaxUID", "path", "size", "sha256")
]


def index_record(ds: Dataset, *, transfer_syntax_uid: str, path: str, size: int, sha256: str) -> dict[str, Any]:
    """The index record of a stored instance: JSON-ready values decoded with its character set."""
    record: dict[str, Any] = {key: _value(ds, key) for key in _DATASET_KEYS}
    record["SOPClassUID"] = record["SOPClassUID"] or str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    record.update(TransferSyntaxUID=transfer_syntax_uid, path=path, size=size, sha256=sha256)
    return record


def _value(ds: Dataset, keyword: str) -> Any:
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed value must not stop the import: index it as empty
        return ""
    if value is None or value == "":
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    if keyword in _INTEGER_KEYS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value).strip()
