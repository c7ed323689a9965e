"""Anonymized files are valid DICOM to independent implementations: DCMTK's `dcmdump` reads
them without a warning, and dicom3tools' `dciodvfy` reports no error the input did not have."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pacsctl.anonymize.deidentify import Anonymizer, Status
from pacsctl.anonymize.profile import Options
from tests.anonymize.helpers import REAL_FILES, linked_pair, part10, real_file
from tests.helpers import dcmtk, require_tool

KEY = b"interop key"
_UID = re.compile(r"\b\d+(\.\d+){2,}\b")
_VALUE = re.compile(r"(Value|value) = <[^>]*>")


def _outputs(tmp_path: Path, options: Options | None = None) -> list[tuple[Path, Path]]:
    """(input, output) files for pydicom's real files and two linked synthetic images."""
    folder = tmp_path / "in"
    folder.mkdir(exist_ok=True)
    pairs = []
    inputs = [real_file(n) for n in REAL_FILES]
    for number, ds in enumerate(linked_pair()):
        path = folder / f"linked{number}.dcm"
        path.write_bytes(part10(ds))
        inputs.append(path)
    anonymizer = Anonymizer(KEY, options)
    for source in inputs:
        outcome = anonymizer.file_bytes(source.read_bytes())
        assert outcome.status is Status.WRITTEN, (source.name, outcome.reason)
        target = tmp_path / "out" / f"{source.stem}.anon.dcm"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(outcome.data or b"")
        pairs.append((source, target))
    return pairs


def test_dcmdump_reads_every_output_without_complaint(tmp_path: Path) -> None:
    for source, target in _outputs(tmp_path, Options(shift_dates=True, clean_descriptors=True)):
        proc = subprocess.run([dcmtk("dcmdump"), "-q", "+E", str(target)], capture_output=True, text=True, errors="replace",
                              timeout=60)
        assert proc.returncode == 0 and proc.stderr.strip() == "", (source.name, proc.stderr)
        full = subprocess.run([dcmtk("dcmdump"), str(target)], capture_output=True, text=True, errors="replace",
                              timeout=60)
        assert "PatientIdentityRemoved" in full.stdout and "113100" in full.stdout


def _errors(tool: str, path: Path) -> set[str]:
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace", timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    # UIDs and quoted values differ by design: compare what is wrong, not with which value.
    return {_VALUE.sub("", _UID.sub("<uid>", line)).strip() for line in lines if line.startswith("Error")}


@pytest.mark.parametrize("options", [None, Options(shift_dates=True, keep_patient_characteristics=True)],
                         ids=["basic", "shift-dates"])
def test_dciodvfy_finds_no_new_error(tmp_path: Path, options: Options | None) -> None:
    tool = require_tool("dciodvfy")
    new = {}
    for source, target in _outputs(tmp_path, options):
        added = _errors(tool, target) - _errors(tool, source)
        if added:
            new[source.name] = sorted(added)
    assert new == {}
