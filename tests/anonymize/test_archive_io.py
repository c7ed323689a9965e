"""`anonymize --study UID` / `-k KEY=VALUE` read from the archive; `--into-archive` stores the
copies as new studies through the archive's ingest."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom

from tests.anonymize.helpers import PATIENT, linked_pair, part10, real_file
from tests.helpers import invoke_cli, run_cli


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _archive_with_studies(tmp_path: Path) -> tuple[Path, str, str]:
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = linked_pair()
    (folder / "a.dcm").write_bytes(part10(first))
    (folder / "b.dcm").write_bytes(part10(second))
    (folder / "ct.dcm").write_bytes(real_file("CT_small.dcm").read_bytes())
    archive = tmp_path / "archive"
    assert invoke_cli("--archive", archive, "import", folder).returncode == 0
    return archive, str(first.StudyInstanceUID), str(pydicom.dcmread(folder / "ct.dcm").StudyInstanceUID)


def test_study_from_the_archive_to_a_folder(tmp_path: Path) -> None:
    archive, study, other = _archive_with_studies(tmp_path)
    out = tmp_path / "out"
    result = invoke_cli("--archive", archive, "anonymize", "--study", study, "--out", out, "--key", "k", "--json")
    assert result.returncode == 0, result.stderr
    *files, summary = _records(result.stdout)
    assert summary["written"] == 2 and len(files) == 2
    outputs = [pydicom.dcmread(r["output"]) for r in files]
    assert {o.StudyInstanceUID for o in outputs} != {study} and len({o.StudyInstanceUID for o in outputs}) == 1
    by_filter = invoke_cli("--archive", archive, "anonymize", "-k", f"PatientID={PATIENT['PatientID']}",
                           "--out", tmp_path / "out2", "--key", "k", "--json")
    assert _records(by_filter.stdout)[-1]["written"] == 2
    none = invoke_cli("--archive", archive, "anonymize", "-k", "PatientID=NOBODY", "--out", tmp_path / "o3")
    assert none.returncode == 2 and "NOBODY" not in none.stderr


def test_into_archive_stores_new_studies_and_ls_shows_them(tmp_path: Path) -> None:
    archive, study, other = _archive_with_studies(tmp_path)
    result = invoke_cli("--archive", archive, "anonymize", "--study", study, "--into-archive", "--key", "k",
                        "--json")
    assert result.returncode == 0, result.stderr
    *files, summary = _records(result.stdout)
    assert summary["written"] == 2 and all(r["output"].startswith("objects/") for r in files)
    listing = invoke_cli("--archive", archive, "ls", "--json")
    studies = {r["StudyInstanceUID"]: r for r in _records(listing.stdout)}
    assert len(studies) == 3 and study in studies and other in studies
    (new,) = set(studies) - {study, other}
    assert new.startswith("2.25.") and studies[new]["PatientID"].startswith("ANON")
    again = invoke_cli("--archive", archive, "anonymize", "--study", study, "--into-archive", "--key", "k",
                       "--json")
    assert again.returncode == 0 and _records(again.stdout)[-1]["written"] == 2  # same copies: duplicates
    assert len(_records(invoke_cli("--archive", archive, "ls", "--json").stdout)) == 3
    clash = invoke_cli("--archive", archive, "anonymize", "--study", study, "--into-archive", "--keep-uids")
    assert clash.returncode == 2


def test_into_archive_dry_run_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = linked_pair()
    (folder / "a.dcm").write_bytes(part10(first))
    (folder / "b.dcm").write_bytes(part10(second))
    archive = tmp_path / "new-archive"
    result = invoke_cli("--archive", archive, "anonymize", folder, "--into-archive", "--dry-run", "--jobs", "2",
                        "--json")
    assert result.returncode == 0, result.stderr
    *files, summary = _records(result.stdout)
    assert summary["written"] == 2 and all(r["output"] is None for r in files)
    assert not archive.exists()
    stored = invoke_cli("--archive", archive, "anonymize", folder, "--into-archive", "--jobs", "2", "--json")
    assert stored.returncode == 0 and _records(stored.stdout)[-1]["written"] == 2
    assert len(_records(invoke_cli("--archive", archive, "ls", "--json").stdout)) == 1


def test_taking_a_study_out_is_audited_without_the_key(tmp_path: Path) -> None:
    archive, study, other = _archive_with_studies(tmp_path)
    result = run_cli("--archive", archive, "anonymize", "--study", study, "--out", tmp_path / "out",
                     "--key", "topsecret", "--json")
    assert result.returncode == 0, result.stderr
    log = invoke_cli("--archive", archive, "audit", "--event", "anonymize", "--json")
    (entry,) = [r for r in _records(log.stdout) if r.get("event") == "anonymize"]
    assert study in entry["uids"] and entry["written"] == 2 and "--key …" in entry["command"]
    assert not [p for p in archive.rglob("*") if p.is_file() and b"topsecret" in p.read_bytes()]
