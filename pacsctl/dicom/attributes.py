"""The index's per-level attributes, and a parsed instance turned into its flat index record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydicom is imported where a data set is read, not for the schema
    from pydicom.dataset import Dataset

from pacsctl.storage.index import LevelFields

# The index's schema: the attributes it keeps per level (the instance level also says where and
# what the stored file is).
PATIENT_FIELDS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
STUDY_FIELDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
)
SERIES_FIELDS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "BodyPartExamined",
)
# The instance level's return keys; the index also keeps what the stored file is.
INSTANCE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber")
INSTANCE_FIELDS = (
    *INSTANCE_KEYS,
    "TransferSyntaxUID",
    "SpecificCharacterSet",
    "path",
    "size",
    "sha256",
)
INDEX_FIELDS = LevelFields(PATIENT_FIELDS, STUDY_FIELDS, SERIES_FIELDS, INSTANCE_FIELDS)

INTEGER_KEYS = frozenset({"SeriesNumber", "InstanceNumber"})
# The record's values read from the data set; the others describe the stored file.
DATASET_KEYS = tuple(
    k
    for k in PATIENT_FIELDS + STUDY_FIELDS + SERIES_FIELDS + INSTANCE_FIELDS
    if k not in ("TransferSyntaxUID", "path", "size", "sha256")
)


def dataset_fields(ds: Dataset) -> dict[str, Any]:
    """The record's data set values: JSON-ready, decoded with the instance's character set."""
    fields: dict[str, Any] = {key: _value(ds, key) for key in DATASET_KEYS}
    fields["SOPClassUID"] = fields["SOPClassUID"] or str(ds.file_meta.get("MediaStorageSOPClassUID", ""))
    return fields


def index_record(
    fields: Mapping[str, Any], *, transfer_syntax_uid: str, path: str, size: int, sha256: str
) -> dict[str, Any]:
    """The index record of a stored instance: its data set `fields` and where and what the file is."""
    record = dict(fields)
    record.update(TransferSyntaxUID=transfer_syntax_uid, path=path, size=size, sha256=sha256)
    return record


def _value(ds: Dataset, keyword: str) -> Any:
    from pydicom.multival import MultiValue  # loaded already: `ds` is pydicom's
    from pydicom.valuerep import PersonName

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
    if keyword in INTEGER_KEYS:
        try:
            return int(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value).strip()
