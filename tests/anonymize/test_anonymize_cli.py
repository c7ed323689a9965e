"""`pacsctl anonymize` from the command line, in process: records, exit codes, never in place."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pydicom
import pytest

from tests.anonymize.helpers import PATIENT, REAL_FILES, linked_pair, part10, real_file
from tests.helpers import invoke_cli


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in" / "Doe_Johanna"  # a file name that names the patient
    folder.mkdir(parents=True)
    for name in REAL_FILES[:5]:
        shutil.copy(real_file(name), folder / name)
    first, second = linked_pair()
    (folder / "first.dcm").write_bytes(part10(first))
    (folder / "second.dcm").write_bytes(part10(second))
    (folder / "notes.txt").write_text("not DICOM")
    return tmp_path / "in"


def test_folder_in_json_out_and_sources_untouched(inputs: Path, tmp_path: Path) -> None:
    before = _digest(inputs)
    out = tmp_path / "out"
    result = invoke_cli("anonymize", inputs, "--out", out, "--key", "k1", "--json")
    assert result.returncode == 0, result.stderr
    *files, summary = _records(result.stdout)
    assert summary["type"] == "summary"
    assert (summary["files"], summary["written"], summary["skipped"]) == (8, 7, 1)
    assert summary["random_key"] is False
    statuses = {Path(r["source"]).name: r["status"] for r in files}
    assert statuses["notes.txt"] == "skipped"
    for record in files:
        assert set(record) >= {"source", "output", "status", "reason"}
        if record["status"] == "written":
            path = Path(record["output"])
            assert path.is_file() and path.stat().st_mode & 0o077 == 0
            ds = pydicom.dcmread(path)
            assert path.stem == ds.SOPInstanceUID and path.parent.name == ds.SeriesInstanceUID
    assert _digest(inputs) == before
    assert not (out / ".pacsctl-tmp").exists()
    written = b"".join(p.read_bytes() for p in out.rglob("*.dcm"))
    assert b"Doe_Johanna" not in written and PATIENT["PatientID"].encode() not in written
    again = invoke_cli("anonymize", inputs, "--out", tmp_path / "again", "--key", "k1", "--json")
    assert _digest(tmp_path / "again") == _digest(out)  # same key: same names, same bytes


def test_refused_and_leaking_files_exit_3_and_are_not_written(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = linked_pair()
    first.BurnedInAnnotation = "YES"
    second.Manufacturer = "Doe scanners"  # kept by the profile: the residual scan catches it
    (folder / "a.dcm").write_bytes(part10(first))
    (folder / "b.dcm").write_bytes(part10(second))
    result = invoke_cli("anonymize", folder, "--out", tmp_path / "out", "--json")
    assert result.returncode == 3
    *files, summary = _records(result.stdout)
    assert {Path(r["source"]).name: r["status"] for r in files} == {"a.dcm": "refused", "b.dcm": "leak"}
    assert all(r["output"] is None for r in files)
    assert (summary["refused"], summary["leak"], summary["random_key"]) == (1, 1, True)
    assert not list((tmp_path / "out").rglob("*.dcm"))
    for text in PATIENT.values():
        assert text not in result.stdout and text not in result.stderr
    human = invoke_cli("anonymize", folder, "--out", tmp_path / "out")
    assert human.returncode == 3 and "leak" in human.stderr and "random key" in human.stderr
    assert "Doe" not in human.stderr.replace(str(folder), "")


def test_zip_input_dry_run_and_key_file(tmp_path: Path) -> None:
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in REAL_FILES[:3]:
            zf.write(real_file(name), f"DICOM/{name}")
    key_file = tmp_path / "key"
    key_file.write_text("secret from a file\n")
    dry = invoke_cli("anonymize", archive, "--out", tmp_path / "out", "--key-file", key_file, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert _records(dry.stdout)[-1]["written"] == 3 and not (tmp_path / "out").exists()
    real = invoke_cli("anonymize", archive, "--out", tmp_path / "out", "--key-file", key_file, "--json")
    planned = {r["output"] for r in _records(dry.stdout)[:-1]}
    assert planned == {r["output"] for r in _records(real.stdout)[:-1]}
    assert all(Path(p).is_file() for p in planned)
    with_key = invoke_cli("anonymize", archive, "--out", tmp_path / "o2", "--key", "secret from a file", "--json")
    assert planned == {r["output"].replace(str(tmp_path / "o2"), str(tmp_path / "out"))
                       for r in _records(with_key.stdout)[:-1]}


def test_usage_errors(inputs: Path, tmp_path: Path) -> None:
    inside = invoke_cli("anonymize", inputs, "--out", inputs / "anon")
    assert inside.returncode == 2 and "inside the input" in inside.stderr
    assert invoke_cli("anonymize", inputs).returncode == 2  # no --out
    assert invoke_cli("anonymize", tmp_path / "missing", "--out", tmp_path / "o").returncode == 2
    both = invoke_cli("anonymize", inputs, "--out", tmp_path / "o", "--keep-dates", "--shift-dates")
    assert both.returncode == 2 and "exclude" in both.stderr
