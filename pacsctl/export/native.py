"""`export --format native`: encapsulated documents (PDF, CDA, STL...) written as the files they
hold, named by the layout with their own extension; every other instance as archived."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from pydicom import dcmread

from pacsctl.export.run import ConvertError
from pacsctl.ingest.documents import DOCUMENT_CLASSES, document_bytes


def with_suffix(relpath: str, suffix: str) -> str:
    """`relpath` with its `.dcm` (any case) replaced by `suffix`, or `suffix` added."""
    return (relpath[:-4] if relpath.lower().endswith(".dcm") else relpath) + suffix


class NativeDocuments:
    """The converter of the native format (see the module docstring)."""

    names_files = False

    def applies(self, record: Mapping[str, Any]) -> bool:
        """Encapsulated document instances only."""
        return str(record.get("SOPClassUID", "")) in DOCUMENT_CLASSES

    def convert(self, data: bytes, record: Mapping[str, Any], relpath: str) -> list[tuple[str, bytes]]:
        """The document, without the padding DICOM added."""
        try:
            ds = dcmread(io.BytesIO(data))
            document = document_bytes(ds)
        except Exception as exc:  # pydicom raises many types for a damaged data set
            raise ConvertError(f"the encapsulated document cannot be read ({type(exc).__name__})") from None
        return [(with_suffix(relpath, DOCUMENT_CLASSES[str(record["SOPClassUID"])]), document)]
