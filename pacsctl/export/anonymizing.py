"""`export --anonymize --key K`: every file passed through the anonymizer (`pacsctl.anonymize`,
PS3.15 Basic Profile, keyed UIDs and pseudonyms), then named by the layout from its
de-identified values, so no folder or file name carries what the anonymizer removed.

An instance the anonymizer refuses (possible burned-in text), or whose residual scan still
finds the patient, is left out and reported by its original UID (as every export error is).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from typing import Any

from pydicom import dcmread

from pacsctl.anonymize.deidentify import Anonymizer, Status
from pacsctl.dicom.attributes import dataset_fields
from pacsctl.export.layout import Layout
from pacsctl.export.run import ConvertError
from pacsctl.export.transcode import Transcoder, transcode


class Anonymized:
    """The converter of `--anonymize` (see the module docstring)."""

    names_files = True

    def __init__(self, anonymizer: Anonymizer, layout: Layout, then: Transcoder | None, media: bool) -> None:
        self.anonymizer, self.layout, self.then, self.media = anonymizer, layout, then, media

    def applies(self, record: Mapping[str, Any]) -> bool:
        """Every instance."""
        return True

    def convert(self, data: bytes, record: Mapping[str, Any], relpath: str) -> list[tuple[str, bytes]]:
        """The de-identified instance (transcoded after, when asked), under its new name."""
        outcome = self.anonymizer.file_bytes(data)
        if outcome.status is Status.SKIPPED:
            return []
        if outcome.status is not Status.WRITTEN or outcome.data is None:
            raise ConvertError(f"not anonymized ({outcome.status.value}): {outcome.reason}")
        out = outcome.data
        if self.then is not None and self.then.applies({"TransferSyntaxUID": _syntax(out)}):
            out = transcode(out, self.then.syntax)
        if self.media:
            return [(relpath, out)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = dcmread(io.BytesIO(out), stop_before_pixels=True)
        return [(self.layout.path_of(dataset_fields(header)), out)]


def _syntax(data: bytes) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return str(dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
