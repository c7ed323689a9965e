"""Start-up of the everyday commands (issue 9 §5): `--help`, `ls`, `quarantine`, `nodes list`,
`config show` and `audit` read no DICOM instance, so they must not import pydicom or numpy
(importing them was most of their start-up: 0.15-0.3 s of a 0.44 s `ls`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacsctl.cli.app import app
from tests.helpers import cli_env

# Runs one command line in a fresh interpreter and prints the heavy modules it loaded.
PROBE = """
import json, sys
from pacsctl.cli.app import run
code = run(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pydicom", "numpy", "pynetdicom"))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _heavy_modules(*args: str) -> tuple[int, list[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=cli_env(), capture_output=True,
                          text=True, timeout=120, check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["code"], result["heavy"]


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from benchmarks.corpus import make_ct

    root = tmp_path_factory.mktemp("startup")
    for i in range(3):
        make_ct(root / "in" / f"{i}.dcm", patient_id=f"P{i}", instance_number=1)
    archive = root / "archive"
    result = CliRunner().invoke(app, ["--archive", str(archive), "import", "--jobs", "1", str(root / "in")])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["--archive", str(archive), "nodes", "add", "peer", "--aet", "PEER",
                                    "--host", "127.0.0.1", "--port", "104"]).exit_code == 0
    return archive


@pytest.mark.parametrize("args", [
    ["--help"],
    ["ls", "--help"],
    ["ls"],
    ["ls", "--level", "instance", "--json"],
    ["ls", "-k", "StudyDate=20240101-", "-k", "patientname=TEST*", "-k", "ModalitiesInStudy=CT\\MR"],
    ["quarantine", "--json"],
    ["nodes", "list"],
    ["config", "show"],
    ["audit", "--json"],
])
def test_everyday_commands_import_no_pydicom_or_numpy(small_archive: Path, args: list[str]) -> None:
    code, heavy = _heavy_modules("--archive", str(small_archive), *args)
    assert code == 0
    assert heavy == []


def test_the_import_still_reads_instances_with_pydicom(small_archive: Path, tmp_path: Path) -> None:
    """The lazy imports are taken where instances are read (a check that the probe sees them)."""
    from benchmarks.corpus import make_ct

    make_ct(tmp_path / "new.dcm", patient_id="P9")
    code, heavy = _heavy_modules("--archive", str(small_archive), "import", "--jobs", "1", str(tmp_path / "new.dcm"))
    assert code == 0
    assert "pydicom" in heavy


def test_the_table_of_common_vrs_agrees_with_pydicoms_dictionary() -> None:
    from pydicom.datadict import dictionary_VR

    from pacsctl.dicom.attributes import INSTANCE_FIELDS, PATIENT_FIELDS, SERIES_FIELDS, STUDY_FIELDS
    from pacsctl.dicom.matching import COMMON_VRS, LEVEL_KEYS, keyword_vr

    assert {k: str(dictionary_VR(k)) for k in COMMON_VRS} == dict(COMMON_VRS)
    indexed = {k for keys in LEVEL_KEYS.values() for k in keys}
    indexed |= {k for k in PATIENT_FIELDS + STUDY_FIELDS + SERIES_FIELDS + INSTANCE_FIELDS if k[0].isupper()}
    assert indexed <= set(COMMON_VRS)  # every attribute `ls` can filter on is in the table
    assert keyword_vr("ImageType") == "CS"  # others come from pydicom's dictionary
