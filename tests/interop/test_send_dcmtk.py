"""`pacsctl send` on the send fast path, into DCMTK `storescp` with a small maximum PDU (every
data set cut into many P-DATA-TF PDUs by hand): what DCMTK writes holds our CT data sets byte
for byte and pydicom's test files' pixel data, in their stored syntaxes (issue 11, send speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom.dsutils import split_dataset

from tests.helpers import TESTDATA_DIR, invoke_cli


def test_send_to_storescp_byte_for_byte(storescp_factory: Any, ct_factory: Any, archive_dir: Path) -> None:
    scp = storescp_factory(extra_args=["-pdu", "4096"])
    cts = ct_factory.series(4, rows=128, cols=128)
    others = [TESTDATA_DIR / n for n in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm")]
    files = cts + others
    proc = invoke_cli("send", f"{scp.aet}@127.0.0.1:{scp.port}", *files, "-j", "1", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["sent"] == len(files)
    written = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in scp.files()}
    assert len(written) == len(files)
    for path in files:
        meta, offset = split_dataset(path)
        out = written[str(meta.MediaStorageSOPInstanceUID)]
        _, out_offset = split_dataset(out)
        if path in cts:  # storescp rewrites what it parses (drops trailing padding, ...): ours
            assert out.read_bytes()[out_offset:] == Path(path).read_bytes()[offset:], path
        else:  # are plain; pydicom's test files are compared as data sets
            assert pydicom.dcmread(out).PixelData == pydicom.dcmread(path).PixelData, path
        assert pydicom.dcmread(out, stop_before_pixels=True).file_meta.TransferSyntaxUID == meta.TransferSyntaxUID
