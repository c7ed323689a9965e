"""The fast header scan (`dicom.rawheader`) against pydicom's path, on real and damaged files.

The scan may decline any input (pydicom's path then reads it). What it must never do is accept
input pydicom's path rejects, or give other index values than pydicom's path does.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pydicom
import pytest

from benchmarks.corpus import make_ct
from pacsctl.dicom import instance as dicomfile
from pacsctl.dicom.rawheader import scan
from tests.helpers import TESTDATA_DIR

CHARSET_DIR = Path(pydicom.__file__).parent / "data" / "charset_files"


def _pydicom_path(data: bytes, monkeypatch: pytest.MonkeyPatch) -> Any:
    """read_instance without the scan: an Instance, or the exception class it raised."""
    with monkeypatch.context() as m:
        m.setattr(dicomfile, "scan", lambda _data: None)
        try:
            inst = dicomfile.read_instance(data)
        except Exception as exc:  # noqa: BLE001 - the class is what is compared
            return type(exc)
        inst.fields()
        return inst


def _assert_agrees(data: bytes, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the scan took `data`; when it did, pydicom's path agrees on every value."""
    fast = scan(data)
    if fast is None:
        return False
    slow = _pydicom_path(data, monkeypatch)
    assert isinstance(slow, dicomfile.Instance), f"scan accepted what pydicom's path rejects: {slow}"
    assert (fast.sop_class_uid, fast.sop_instance_uid, fast.transfer_syntax_uid) == (
        slow.sop_class_uid, slow.sop_instance_uid, slow.transfer_syntax_uid)
    assert fast.fields == slow.fields()
    return True


def _all_files() -> list[Path]:
    paths = [p for p in sorted(TESTDATA_DIR.iterdir()) if p.suffix == ".dcm"]
    return paths + sorted(CHARSET_DIR.glob("*.dcm"))


@pytest.mark.parametrize("path", _all_files(), ids=lambda p: p.name)
def test_scan_agrees_with_pydicom_on_real_files(path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _assert_agrees(path.read_bytes(), monkeypatch)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm",
                                  "MR_small_RLE.dcm", "rtplan.dcm", "reportsi.dcm"])
def test_scan_takes_the_plain_cases(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain files (explicit, implicit, encapsulated, nested sequences) go the fast way."""
    assert _assert_agrees((TESTDATA_DIR / name).read_bytes(), monkeypatch)


def test_scan_reads_a_generated_ct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_ct(tmp_path / "ct.dcm", patient_id="PID-7", instance_number=12, rows=16, cols=16)
    assert _assert_agrees(path.read_bytes(), monkeypatch)
    fields = scan(path.read_bytes()).fields  # type: ignore[union-attr]
    assert fields["PatientID"] == "PID-7" and fields["InstanceNumber"] == 12


def test_scan_declines_what_needs_pydicom() -> None:
    """Big endian, deflate, no File Meta, non-ASCII names: pydicom's path reads them."""
    for name in ("MR_small_bigendian.dcm", "image_dfl.dcm", "no_meta.dcm",
                 "ExplVR_LitEndNoMeta.dcm"):
        assert scan((TESTDATA_DIR / name).read_bytes()) is None, name
    assert scan((CHARSET_DIR / "chrH31.dcm").read_bytes()) is None  # Japanese, ISO 2022


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm",
                                  "rtplan.dcm", "UN_sequence.dcm"])
def test_scan_never_accepts_damage_pydicom_rejects(name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cut inside the header and a sample of cuts in the pixel data, and seeded random
    byte changes in the header: the scan declines, or agrees with pydicom's path."""
    data = (TESTDATA_DIR / name).read_bytes()
    header_end = min(len(data), 4096)
    rng = random.Random(name)
    cuts = list(range(132, header_end, 3)) + rng.sample(range(header_end, len(data)), 40) \
        if len(data) > header_end + 40 else list(range(132, len(data), 3))
    for cut in cuts:
        _assert_agrees(data[:cut], monkeypatch)
    for _ in range(300):
        changed = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            changed[rng.randrange(132, header_end)] = rng.randrange(256)
        _assert_agrees(bytes(changed), monkeypatch)


def test_written_out_tables_match_pydicoms_dictionary() -> None:
    """The scan carries its own syntax and tag tables (so explicit VR data imports no pydicom):
    they must say what pydicom's dictionary says."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.uid import AllTransferSyntaxes

    from pacsctl.dicom import rawheader
    from pacsctl.dicom.attributes import DATASET_KEYS

    assert rawheader.PLAIN_SYNTAXES == {
        str(uid) for uid in AllTransferSyntaxes if uid.is_little_endian and not uid.is_deflated}
    assert {k: rawheader.KEYWORD_TAGS[k] for k in DATASET_KEYS} == {
        k: (tag_for_keyword(k), dictionary_VR(tag_for_keyword(k)).encode()) for k in DATASET_KEYS}


def test_scanning_explicit_vr_data_imports_no_pydicom(tmp_path: Path) -> None:
    """`verify` of a plain archive hashes and scans without paying pydicom's import (0.15 s)."""
    import subprocess
    import sys

    from tests.helpers import cli_env

    path = make_ct(tmp_path / "ct.dcm", rows=16, cols=16)  # explicit VR little endian
    code = ("import sys; from pacsctl.dicom.rawheader import scan;"
            f"assert scan(open({str(path)!r}, 'rb').read()) is not None;"
            "print(sorted(m for m in sys.modules if m.startswith('pydicom')))")
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", out.stdout
