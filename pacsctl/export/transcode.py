"""`export --transcode SYNTAX`: instances written in another transfer syntax, for old viewers
(decompressed: `explicit-le`) or smaller media (`rle`, `jpeg2000-lossless`, `jpeg-ls-lossless`
where an encoder is installed). Only lossless targets: the decoded pixel values stay identical.
Instances already in the target syntax, and those without pixel data, are re-encoded only when
the syntax differs (their bytes are otherwise copied as archived)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from typing import Any

from pydicom import dcmread, dcmwrite
from pydicom.pixels import get_encoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from pacsctl.errors import UsageError
from pacsctl.export.formats import Syntax
from pacsctl.export.run import ConvertError


class Transcoder:
    """The converter of `--transcode` (see the module docstring)."""

    names_files = False

    def __init__(self, syntax: Syntax) -> None:
        self.syntax = syntax
        if syntax is not Syntax.EXPLICIT_LE and not get_encoder(UID(syntax.uid)).is_available:
            raise UsageError(
                f"no installed encoder writes {syntax.value}",
                hint="install the encoders: pylibjpeg-rle, pylibjpeg-openjpeg, pyjpegls",
            )

    def applies(self, record: Mapping[str, Any]) -> bool:
        """Instances not yet in the target syntax."""
        return str(record.get("TransferSyntaxUID", "")) != self.syntax.uid

    def convert(self, data: bytes, record: Mapping[str, Any], relpath: str) -> list[tuple[str, bytes]]:
        """The instance in the target syntax."""
        return [(relpath, transcode(data, self.syntax))]


def transcode(data: bytes, syntax: Syntax) -> bytes:
    """The Part-10 file `data` in `syntax` (lossless). Raises ConvertError when its pixel data
    cannot be decoded or encoded (the reason names the codec problem, not a value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(io.BytesIO(data))
            has_pixels = "PixelData" in ds
            source = ds.file_meta.TransferSyntaxUID
            if has_pixels and source.is_compressed:
                ds.decompress(generate_instance_uid=False)
            elif has_pixels and not source.is_little_endian:  # OW words swapped to little endian
                values = ds.pixel_array
                ds.PixelData = values.astype(values.dtype.newbyteorder("<")).tobytes()
                ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
            if syntax is Syntax.EXPLICIT_LE or not has_pixels:
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            else:
                ds.compress(UID(syntax.uid), generate_instance_uid=False)
            out = io.BytesIO()
            # dcmwrite, not save_as: it converts a big endian data set (numbers are re-encoded)
            dcmwrite(out, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
        except Exception as exc:  # codecs and pydicom raise many types
            reason = " ".join(str(exc).split())[:200]
            raise ConvertError(
                f"cannot transcode to {syntax.value}: {type(exc).__name__}: {reason}"
            ) from None
    return out.getvalue()
