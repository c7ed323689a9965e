"""An archive to export from: a CT series, another patient's study, and pydicom's real files in
compressed, big endian and non-image syntaxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacsctl.archive.archive import Archive
from tests.helpers import TESTDATA_DIR
from tests.integrity.test_verify import make_archive

REAL_FILES = ("MR_small_RLE.dcm", "JPEG2000.dcm", "ExplVR_BigEnd.dcm", "rtplan.dcm", "SC_rgb_jpeg_dcmtk.dcm")


@pytest.fixture
def archive(archive_dir: Path, ct_factory: Any) -> Iterator[Archive]:
    real = [TESTDATA_DIR / name for name in REAL_FILES]
    series = ct_factory.series(4, patient_id="P1") + ct_factory.series(2, patient_id="P2")
    arch = make_archive(archive_dir, series + real)
    yield arch
    arch.close()
