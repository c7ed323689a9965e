"""`pacsctl import` end to end (a real subprocess): NDJSON, summary, exit codes, dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from tests.storage.checks import consistency, object_files
from tests.storage.trees import Expected, messy_tree

SUMMARY_KEYS = ("files", "imported", "duplicates", "quarantined", "skipped")


@pytest.fixture
def tree(tmp_path: Path, testdata_dir: Path) -> tuple[Path, Expected]:
    root = tmp_path / "incoming"
    root.mkdir()
    return root, messy_tree(root, testdata_dir)


def ndjson(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[:-1], lines[-1]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def test_json_records_summary_and_exit_code(tree, cli, archive_dir: Path) -> None:
    root, exp = tree
    result = cli("import", "--json", "--jobs", "2", str(root))
    assert result.returncode == 3, result.stderr  # something was quarantined
    records, summary = ndjson(result.stdout)
    for key in SUMMARY_KEYS:
        assert isinstance(summary[key], int), key
    assert isinstance(summary["elapsed"], (int, float))
    assert summary["files"] == summary["imported"] + summary["duplicates"] + summary["quarantined"] + summary["skipped"]
    assert (summary["files"], summary["imported"], summary["quarantined"], summary["skipped"]) == (
        exp.files, len(exp.stored), len(exp.quarantined), len(exp.skipped))
    # one record per quarantined or skipped input, with its reason
    assert len(records) == summary["quarantined"] + summary["skipped"]
    assert {r["path"] for r in records if r["status"] == "quarantined"} == exp.quarantined
    assert {r["path"] for r in records if r["status"] == "skipped"} == exp.skipped
    assert all(r["reason"] for r in records)
    for r in records:
        if r["status"] == "quarantined":
            assert (archive_dir / r["quarantine_path"]).is_file()
    assert consistency(archive_dir) == []


def test_clean_import_exits_0_and_rerun_counts_duplicates(cli, ct_factory, archive_dir: Path, tmp_path: Path) -> None:
    ct_factory.series(6)
    result = cli("import", "--json", str(tmp_path / "ct"))
    assert result.returncode == 0, result.stderr
    records, summary = ndjson(result.stdout)
    assert records == [] and summary["imported"] == 6 == summary["files"]
    again = cli("import", "--json", str(tmp_path / "ct"))
    assert again.returncode == 0
    _, summary = ndjson(again.stdout)
    assert (summary["imported"], summary["duplicates"]) == (0, 6)
    human = cli("import", str(tmp_path / "ct"))  # human output: summary on stdout or stderr
    assert human.returncode == 0 and "6" in human.stdout + human.stderr


def test_dry_run_writes_nothing(tree, cli, archive_dir: Path) -> None:
    root, exp = tree
    cli("config", "show")  # the archive may exist before: its state must not change
    before = snapshot(archive_dir)
    result = cli("import", "--json", "--dry-run", str(root))
    _, summary = ndjson(result.stdout)
    assert snapshot(archive_dir) == before
    assert summary["imported"] == len(exp.stored) and summary["quarantined"] == len(exp.quarantined)
    assert result.returncode == 3  # it says what would happen, exit code included


def test_on_conflict_replace_from_the_cli(cli, ct_factory, archive_dir: Path, tmp_path: Path) -> None:
    first = ct_factory("a.dcm", directory=tmp_path / "one")
    ds = pydicom.dcmread(first)
    ds.PatientName = "FIXED^NAME"
    (tmp_path / "two").mkdir()
    ds.save_as(tmp_path / "two" / "a.dcm", enforce_file_format=True)
    assert cli("import", str(tmp_path / "one")).returncode == 0
    keep = cli("import", "--json", str(tmp_path / "two"))
    _, summary = ndjson(keep.stdout)
    assert keep.returncode == 3 and summary["quarantined"] == 1
    [stored] = object_files(archive_dir).values()
    assert stored.read_bytes() == first.read_bytes()
    replace = cli("import", "--json", "--on-conflict", "replace", str(tmp_path / "two"))
    _, summary = ndjson(replace.stdout)
    assert replace.returncode == 0 and summary["imported"] == 1, replace.stdout
    assert stored.read_bytes() == (tmp_path / "two" / "a.dcm").read_bytes()
    listed = cli("ls", "--json")
    assert listed.returncode == 0
    [study] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert study["PatientName"] == "FIXED^NAME" and study["NumberOfStudyRelatedInstances"] == 1
    bad = cli("import", "--on-conflict", "newest", str(tmp_path / "two"))
    assert bad.returncode == 2


def test_missing_path_is_a_usage_error_naming_it(cli, ct_factory, archive_dir: Path, tmp_path: Path) -> None:
    """A typo in a path used to end in "skipped 1 of 1", exit 0; now nothing is imported."""
    ct_factory.series(2)
    result = cli("import", "--json", str(tmp_path / "ct"), str(tmp_path / "absent"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines()[0] == f"error: no such file or folder: {tmp_path / 'absent'}"
    assert not archive_dir.exists()  # and no archive was created for it


def test_non_utf8_file_names_from_old_media(cli, ct_factory, archive_dir: Path, tmp_path: Path) -> None:
    """Latin-1 names (old CDs, Windows shares) are not valid UTF-8: imported and reported, no crash."""
    import os

    src = tmp_path / "media"
    src.mkdir()
    good = ct_factory().read_bytes()
    root = os.fsencode(src)
    os.mkdir(root + b"/dossier_\xe9")
    with open(root + b"/dossier_\xe9/IM1", "wb") as fh:
        fh.write(good)
    with open(root + b"/caf\xe9.dcm", "wb") as fh:
        fh.write(good[: len(good) // 2])
    with open(root + b"/\xe9tude.txt", "wb") as fh:
        fh.write(b"notes")
    for args in (["--json"], []):
        result = run_bytes("import", *args, str(src))
        assert result.returncode == 3, result.stderr
        assert b"Traceback" not in result.stderr and b"internal error" not in result.stderr
    result = run_bytes("import", "--json", str(src))
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["files"], summary["duplicates"], summary["quarantined"], summary["skipped"]) == (3, 1, 1, 1)
    assert consistency(archive_dir) == []


def test_ndjson_is_valid_utf8_with_non_utf8_file_names(ct_factory, archive_dir: Path, tmp_path: Path) -> None:
    import os

    src = tmp_path / "media"
    src.mkdir()
    with open(os.fsencode(src) + b"/\xe9tude.txt", "wb") as fh:
        fh.write(b"notes")
    result = run_bytes("import", "--json", str(src))
    for line in result.stdout.splitlines():
        json.loads(line.decode("utf-8"))  # strict: a JSON consumer (jq, any language) must read it


def run_bytes(*args: str):
    import subprocess
    import sys

    from tests.helpers import cli_env

    return subprocess.run([sys.executable, "-m", "pacsctl", *args], env=cli_env(), capture_output=True, timeout=120)
