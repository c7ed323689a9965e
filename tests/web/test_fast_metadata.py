"""The fast header-to-JSON walk gives exactly what pydicom's path gives, on every file it takes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from pydicom.uid import generate_uid

from benchmarks.corpus import make_ct
from pacsctl.web import metadata
from tests.helpers import readable_test_files


def _same_as_pydicom(path: Path) -> bool | None:
    """None: the fast path left the file to pydicom; else whether both agree."""
    base = "/dicom-web/studies/1/series/2/instances/3/bulkdata/"
    fast = metadata._fast_header(path, base)
    if fast is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = metadata.pydicom_header(path, base)
    assert json.dumps(fast, sort_keys=True) == json.dumps(slow, sort_keys=True), path.name
    return True


def test_fast_header_matches_pydicom_on_pydicoms_test_files() -> None:
    taken = [p.path.name for p in readable_test_files() if _same_as_pydicom(p.path)]
    # most of them are plain explicit VR little endian; the rest (implicit VR, big endian,
    # deflate, other character sets, UN) must have gone to pydicom, checked above too
    assert len(taken) >= 40, taken


def test_fast_header_matches_pydicom_on_stored_ct(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    make_ct(
        path,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        instance_number=3,
        extra={"ImageType": ["ORIGINAL ", "PRIMARY", "AXIAL"], "WindowCenter": ["40", "400"]},
    )
    assert _same_as_pydicom(path) is True
    fast = metadata._fast_header(path, "/b/")
    assert fast is not None and fast["7FE00010"] == {"vr": "OW", "BulkDataURI": "/b/7FE00010"}


def test_non_ascii_text_goes_to_pydicom(tmp_path: Path) -> None:
    path = tmp_path / "latin.dcm"
    make_ct(
        path,
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        patient_name="MÜLLER^JÖRG",
        extra={"SpecificCharacterSet": "ISO_IR 100"},
    )
    assert metadata._fast_header(path, "/b/") is None
    header = metadata.instance_header(
        path, {"StudyInstanceUID": "1", "SeriesInstanceUID": "2", "SOPInstanceUID": "3"}
    )
    assert header["00100010"]["Value"] == [{"Alphabetic": "MÜLLER^JÖRG"}]
