"""The choices an export offers, named without importing pydicom (the CLI declares its options
from these at start-up; the modules that act on them load pydicom when they run)."""

from __future__ import annotations

from enum import StrEnum

DEFAULT_LAYOUT = (
    "{PatientID}/{StudyDate}_{AccessionNumber}/{SeriesNumber:03}_{SeriesDescription}/{InstanceNumber:05}.dcm"
)


class ExportFormat(StrEnum):
    """What an export writes."""

    FOLDER = "folder"  # the archived files under the layout's names
    ZIP = "zip"  # the same tree in one zip file
    DICOMDIR = "dicomdir"  # DICOM media: 8-character file IDs and a DICOMDIR
    NATIVE = "native"  # a folder, encapsulated documents (PDF, CDA...) as their own files
    PNG = "png"  # rendered images (export/images)
    JPEG = "jpeg"


class Syntax(StrEnum):
    """The transfer syntaxes `--transcode` writes (lossless only)."""

    EXPLICIT_LE = "explicit-le"
    RLE = "rle"
    JPEG2000_LOSSLESS = "jpeg2000-lossless"
    JPEG_LS_LOSSLESS = "jpeg-ls-lossless"

    @property
    def uid(self) -> str:
        """The transfer syntax UID."""
        return {
            Syntax.EXPLICIT_LE: "1.2.840.10008.1.2.1",
            Syntax.RLE: "1.2.840.10008.1.2.5",
            Syntax.JPEG2000_LOSSLESS: "1.2.840.10008.1.2.4.90",
            Syntax.JPEG_LS_LOSSLESS: "1.2.840.10008.1.2.4.80",
        }[self]
