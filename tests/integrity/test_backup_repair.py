"""A damaged copy in a backup is mended by `verify --backup DEST --repair` (copied again from
the archive, only when the archive's bytes are the ones recorded at ingest); `backup` alone
leaves a copy of the right size alone ("unchanged"), which used to leave no way out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integrity.test_verify import flip_bit, make_archive


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def backed_up(archive_dir: Path, ct_factory: Any, tmp_path: Path, cli) -> tuple[Path, list[dict]]:
    with make_archive(archive_dir, ct_factory.series(4)) as archive:
        records = sorted(archive.index.iter_instances(), key=lambda r: r["path"])
    dest = tmp_path / "backup"
    assert cli("backup", dest).returncode == 0
    return dest, records


def test_verify_backup_repair_copies_a_damaged_copy_again(backed_up, archive_dir: Path, cli) -> None:
    dest, records = backed_up
    copy = dest / records[1]["path"]
    flip_bit(copy)
    assert cli("backup", dest).returncode == 0  # same size: backup alone does not look inside
    found = cli("verify", "--backup", dest)
    assert found.returncode == 3 and "hash_mismatch" in found.stdout and "--repair" in found.stderr

    mended = cli("verify", "--backup", dest, "--repair", "--json")
    assert mended.returncode == 3, mended.stderr  # damage happened: say so once
    *problems, summary = lines(mended.stdout)
    assert [(p["problem"], p["path"], p["action"]) for p in problems] == [
        ("hash_mismatch", records[1]["path"], "copied again from the archive")]
    assert (summary["status"], summary["repaired"], summary["problems"]) == ("repaired", 1, 0)
    assert copy.read_bytes() == (archive_dir / records[1]["path"]).read_bytes()
    assert cli("verify", "--backup", dest).returncode == 0


def test_a_damaged_archive_copy_is_never_copied_over_the_backup(backed_up, archive_dir: Path, cli) -> None:
    dest, records = backed_up
    flip_bit(dest / records[0]["path"], 200)
    flip_bit(archive_dir / records[0]["path"], 300)  # both rotten: nothing good to copy
    proc = cli("verify", "--backup", dest, "--repair", "--json")
    assert proc.returncode == 3
    *problems, summary = lines(proc.stdout)
    [problem] = [p for p in problems if p["path"] == records[0]["path"]]
    assert problem["action"].startswith("not repaired: ") and "hash recorded at ingest" in problem["action"]
    assert summary["status"] == "problems" and summary["problems"] == 1


def test_repair_needs_a_backup(backed_up, cli) -> None:
    proc = cli("verify", "--repair")
    assert proc.returncode == 2 and "--repair goes with --backup" in proc.stderr
