"""Recognise, check and normalise one DICOM instance given as bytes.

The archive stores instances byte for byte. This module decides whether input is DICOM at all
(non-DICOM is skipped), whether it is a complete, readable instance (else quarantined with a
reason), and gives files without a File Meta header a proper one, keeping the data set's bytes.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pacsctl.dicom.attributes import dataset_fields
from pacsctl.dicom.rawheader import DicomBytes, scan
from pacsctl.errors import InvalidDicomError

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
PREAMBLE = b"\x00" * 128 + b"DICM"
_DEFER_SIZE = 4096
# First groups a bare data set (no preamble, no meta) plausibly starts with.
_BARE_START_GROUPS = {0x0002, 0x0008}


# Explicit VRs with a 4-byte length (PS3.5 7.1.2): the File Meta group is always explicit VR LE.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_TRANSFER_SYNTAX_TAG = (0x0002, 0x0010)
# How much of a stored file is read to find where its File Meta group ends (it is rarely 1 KiB).
_META_HEAD = 64 << 10


class NotDicomError(Exception):
    """Input that is not DICOM at all (viewer programs, autorun.inf, PDFs): skipped, not quarantined."""


class DicomdirError(Exception):
    """Input that is a DICOMDIR: media to follow, not an instance to store."""


@dataclass
class Instance:
    """A checked instance: the Part-10 bytes to store, and its parsed data set or, when the
    fast scan read it (`rawheader`), only the index fields."""

    data: DicomBytes
    dataset: Dataset | None
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    _fields: dict[str, Any] | None = field(default=None, repr=False)

    def fields(self) -> dict[str, Any]:
        """The index record's data set values (`records.dataset_fields`)."""
        if self._fields is None:
            assert self.dataset is not None
            self._fields = dataset_fields(self.dataset)
        return self._fields


@dataclass(frozen=True)
class DataSetIdentity:
    """What makes two Part-10 copies the same instance: the data set's bytes (everything after
    the File Meta group 0002) and the transfer syntax they are encoded in. The File Meta group
    itself says who wrote the file (Implementation Class UID, Source AE Title): copies of one
    image written by a modality, by `serve` and by another PACS differ there and nowhere else."""

    transfer_syntax_uid: str
    sha256: str


def data_set_offset(head: DicomBytes | memoryview) -> tuple[int, str] | None:
    """(offset where the data set starts, Transfer Syntax UID) of Part-10 bytes; None when
    `head` is not Part-10 or its File Meta group does not end inside `head`."""
    size = len(head)
    if size < 132 or bytes(head[128:132]) != b"DICM":
        return None
    pos, syntax = 132, ""
    while pos + 8 <= size:
        group, element = (
            int.from_bytes(head[pos : pos + 2], "little"),
            int.from_bytes(head[pos + 2 : pos + 4], "little"),
        )
        if group != 0x0002:
            return pos, syntax
        if bytes(head[pos + 4 : pos + 6]) in _LONG_VRS:
            if pos + 12 > size:
                return None
            length, pos = int.from_bytes(head[pos + 8 : pos + 12], "little"), pos + 12
        else:
            length, pos = int.from_bytes(head[pos + 6 : pos + 8], "little"), pos + 8
        if length == 0xFFFFFFFF or pos + length > size:
            return None
        if (group, element) == _TRANSFER_SYNTAX_TAG:
            syntax = bytes(head[pos : pos + length]).rstrip(b"\x00 ").decode("ascii", "replace")
        pos += length
    return (pos, syntax) if pos == size else None


def data_set_identity(data: DicomBytes) -> DataSetIdentity | None:
    """The identity of Part-10 bytes in memory (None: not Part-10, or no complete meta group)."""
    found = data_set_offset(memoryview(data)[:_META_HEAD] if len(data) > _META_HEAD else data)
    if found is None:
        return None
    offset, syntax = found
    return DataSetIdentity(syntax, hashlib.sha256(memoryview(data)[offset:]).hexdigest())


def data_set_identity_of_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> DataSetIdentity | None:
    """The identity of a Part-10 file, read once in chunks (memory stays bounded)."""
    with open(path, "rb", buffering=0) as fh:
        head = fh.read(_META_HEAD)
        found = data_set_offset(head)
        if found is None:
            return None
        offset, syntax = found
        digest = hashlib.sha256(memoryview(head)[offset:])
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return DataSetIdentity(syntax, digest.hexdigest())


def looks_like_dicom(head: bytes) -> bool:
    """Cheap test on the first 132+ bytes: a Part-10 file or a bare data set."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) >= 8:
        group = int.from_bytes(head[0:2], "little")
        return group in _BARE_START_GROUPS
    return False


def read_instance(data: bytes | mmap.mmap) -> Instance:
    """Check `data` and return it as a storable instance. A read-only memory map of a file
    is read in place (only the header's pages are touched) and becomes the instance's `data`.

    Raises NotDicomError (skip), DicomdirError (media), InvalidDicomError (quarantine).
    """
    if not data:
        raise NotDicomError("empty file")
    if not looks_like_dicom(data[:132]):
        raise NotDicomError("not a DICOM file")
    plain = scan(data)
    if plain is not None:
        return Instance(
            data, None, plain.sop_class_uid, plain.sop_instance_uid, plain.transfer_syntax_uid, plain.fields
        )
    part10 = len(data) >= 132 and data[128:132] == b"DICM"
    ds = _parse(data, force=not part10)
    meta = ds.file_meta if hasattr(ds, "file_meta") else FileMetaDataset()
    if meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise DicomdirError("DICOMDIR")
    sop_class = str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    sop_instance = str(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID") or "")
    if not part10 and not (sop_class and sop_instance):
        raise NotDicomError("not a DICOM file (no SOP Class/Instance UID)")
    for keyword, value in (("SOPClassUID", sop_class), ("SOPInstanceUID", sop_instance)):
        if not value:
            raise InvalidDicomError(f"missing {keyword}")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            raise InvalidDicomError(f"missing {keyword}")
    if part10:
        syntax = str(meta.get("TransferSyntaxUID") or "")
        if not syntax:
            raise InvalidDicomError("File Meta header has no TransferSyntaxUID")
        return Instance(data, ds, sop_class, sop_instance, syntax)
    return _with_file_meta(data, ds, sop_class, sop_instance)


def part10_bytes(meta: FileMetaDataset, dataset_bytes: bytes) -> bytes:
    """Preamble + encoded File Meta + the data set bytes exactly as given (e.g. as received)."""
    buffer = io.BytesIO()
    buffer.write(PREAMBLE)
    write_file_meta_info(cast(Any, buffer), meta, enforce_standard=True)  # any binary file will do
    buffer.write(dataset_bytes)
    return buffer.getvalue()


def file_meta_for(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    """A standard File Meta header for an instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PACSCTL"
    return meta


def _with_file_meta(data: DicomBytes, ds: Dataset, sop_class: str, sop_instance: str) -> Instance:
    """Give a bare data set (no preamble/meta) a File Meta header; keep its bytes as they are."""
    implicit, little = ds.original_encoding
    syntax = (
        ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    )
    offset = 0
    if int.from_bytes(data[0:2], "little") == 0x0002:  # a meta group without preamble: drop it
        offset = _end_of_group2(data)
    meta = file_meta_for(sop_class, sop_instance, syntax)
    stored = part10_bytes(meta, data[offset:])
    return Instance(stored, _parse(stored, force=False), sop_class, sop_instance, syntax)


def _end_of_group2(data: DicomBytes) -> int:
    """Offset where an explicit-VR-LE group 0002 that starts at 0 ends."""
    fp = io.BytesIO(data)
    pydicom.filereader._read_file_meta_info(fp)
    return fp.tell()


def _parse(data: DicomBytes, force: bool) -> Dataset:
    """Parse every element's framing and fail on truncation pydicom would pass silently."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # Large values (pixel data) are skipped, not copied: only the header is needed here.
            ds = pydicom.dcmread(cast(BinaryIO, _as_file(data)), force=force, defer_size=_DEFER_SIZE)
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise InvalidDicomError(f"unreadable: {_first_line(exc)}") from None
    for warning in caught:
        text = str(warning.message)
        if "end of file" in text.lower() or "eof" in text.lower():
            raise InvalidDicomError(f"truncated: {_first_line(text)}")
    if not len(ds):
        raise InvalidDicomError("no data elements")
    _check_complete(ds, len(data))
    return ds


def _as_file(data: bytes | mmap.mmap) -> io.BufferedIOBase | mmap.mmap:
    """A file object over the data; a memory map (a large input, see `ingest.reading`) is read
    in place, since wrapping it in BytesIO would copy all of it into memory."""
    if isinstance(data, mmap.mmap):
        data.seek(0)
        return data
    return io.BytesIO(data)


def _check_complete(ds: Dataset, size: int) -> None:
    """The last top-level element must end inside the data: pydicom reads short values silently."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("TransferSyntaxUID") or "") == DeflatedExplicitVRLittleEndian:
        return  # offsets count in the inflated stream; a cut deflate stream fails to inflate
    last = ds._dict[max(ds._dict)] if ds._dict else None
    if isinstance(last, RawDataElement) and last.length != 0xFFFFFFFF:
        end = last.value_tell + last.length
        if end > size:
            raise InvalidDicomError(f"truncated: {last.tag} needs {end - size} more bytes")
        trailing = size - end
        if 0 < trailing < 8:
            raise InvalidDicomError("truncated: file ends inside an element header")


def _first_line(exc: object) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
