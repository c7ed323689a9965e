"""`export --format folder` starts fast: its modules do not pull in pydicom, numpy or PIL
(~0.6 s of imports, a third of a 1000-instance export); only dicomdir, rendering, transcoding
and anonymizing need them, and import them when asked."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("pydicom", "numpy", "PIL")


def test_the_folder_and_zip_export_path_imports_no_dicom_or_imaging_library() -> None:
    code = (
        "import sys\n"
        "import pacsctl.cli.export, pacsctl.export.run, pacsctl.export.target, pacsctl.export.zipout\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""
