"""`pacsctl backup` and `pacsctl reindex`: exit codes, JSON shape, restore, and a backup during `serve`."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from pacsctl.integrity.manifest import read_manifest
from pacsctl.storage.files import sha256_file
from tests.integrity.test_verify import make_archive


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def records(archive_dir: Path, ct_factory: Any, dicom_test_files: list[Path]) -> list[dict]:
    extra = [p for p in dicom_test_files if p.name in ("MR_small.dcm", "rtplan.dcm")]
    with make_archive(archive_dir, ct_factory.series(3, patient_id="P1") + ct_factory.series(2, patient_id="P2") + extra) as archive:
        return sorted(archive.index.iter_instances(), key=lambda r: r["path"])


def test_backup_json_summary_and_incremental_run(records: list[dict], cli: Callable[..., Any], tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    first = cli("backup", dest, "--json")
    assert first.returncode == 0, first.stderr
    [summary] = lines(first.stdout)
    assert summary["type"] == "summary" and summary["command"] == "backup"
    assert all(isinstance(summary[k], int) for k in ("copied", "skipped", "bytes", "failed"))
    assert (summary["copied"], summary["skipped"], summary["bytes"]) == (7, 0, sum(r["size"] for r in records))
    again = lines(cli("backup", dest, "--json").stdout)[-1]
    assert (again["copied"], again["skipped"], again["bytes"]) == (0, 7, 0)
    human = cli("backup", dest)
    assert human.returncode == 0 and "0 copied" in human.stderr and "7 unchanged" in human.stderr


def test_backup_partial_failure_exits_3(records: list[dict], archive_dir: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    (archive_dir / records[0]["path"]).unlink()
    proc = cli("backup", tmp_path / "backup", "--json")
    assert proc.returncode == 3
    problem, summary = lines(proc.stdout)
    assert (problem["type"], problem["problem"], problem["path"]) == ("problem", "copy_failed", records[0]["path"])
    assert (summary["copied"], summary["failed"]) == (6, 1)


def test_backup_usage_errors_exit_2(records: list[dict], archive_dir: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    assert cli("backup", archive_dir / "objects").returncode == 2
    assert cli("backup").returncode == 2
    nothing = cli("backup", tmp_path / "b", env={"PACSCTL_ARCHIVE": str(tmp_path / "none")})
    assert nothing.returncode == 2 and "error:" in nothing.stderr


def test_restore_procedure(records: list[dict], archive_dir: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    """README's restore, step by step: the archive is lost, the backup becomes the archive."""
    dest = tmp_path / "backup"
    assert cli("backup", dest).returncode == 0
    studies_before = lines(cli("ls", "--json").stdout)
    shutil.rmtree(archive_dir)  # the disk died

    assert cli("verify", "--backup", dest).returncode == 0            # 1. the backup is intact
    restored = tmp_path / "srv-pacs"
    subprocess.run(["cp", "-a", str(dest), str(restored)], check=True)  # 2. copy it into place
    reindexed = cli("--archive", restored, "reindex", "--json")        # 3. rebuild the index
    assert reindexed.returncode == 0, reindexed.stderr
    [summary] = lines(reindexed.stdout)
    assert (summary["command"], summary["files"], summary["indexed"], summary["checked_against_manifest"]) == ("reindex", 7, 7, 7)
    (restored / "backup-manifest.ndjson").unlink()                     # 4. a backup no more
    (restored / "backup.lock").unlink()
    assert cli("--archive", restored, "verify").returncode == 0
    assert lines(cli("--archive", restored, "ls", "--json").stdout) == studies_before
    assert (restored / "objects").stat().st_mode & 0o777 == 0o700


def test_reindex_exit_codes(records: list[dict], archive_dir: Path, cli: Callable[..., Any]) -> None:
    assert cli("reindex").returncode == 0
    (archive_dir / "objects" / "junk.dcm").write_bytes(b"junk")
    proc = cli("reindex", "--json")
    assert proc.returncode == 3
    problem, summary = lines(proc.stdout)
    assert (problem["problem"], problem["path"], summary["indexed"], summary["problems"]) == ("unreadable", "objects/junk.dcm", 7, 1)


def test_backup_during_serve_restores_cleanly(archive_dir: Path, ct_factory: Any, serve_factory: Callable[..., Any],
                                              cli: Callable[..., Any], tmp_path: Path) -> None:
    """C-STOREs keep arriving at a running `serve` while `pacsctl backup` runs."""
    sent = ct_factory.series(5, patient_id="EARLY")
    late = ct_factory.series(60, patient_id="LATE", rows=32, cols=32)
    server = serve_factory(archive_dir, "--workers", "1")
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.aet)
    assert assoc.is_established
    statuses: list[int] = []
    started = threading.Event()

    def store(paths: list[Path]) -> None:
        for path in paths:
            statuses.append(int(assoc.send_c_store(pydicom.dcmread(path)).Status))
            started.set()

    store(sent)
    sender = threading.Thread(target=store, args=(late,))
    sender.start()
    try:
        started.wait(30)
        dest = tmp_path / "backup"
        proc = cli("backup", dest, "--json")
        still_sending = sender.is_alive()
    finally:
        sender.join(120)
        assoc.release()
    assert statuses == [0] * 65
    assert proc.returncode == 0, proc.stderr
    summary = lines(proc.stdout)[-1]
    manifest = read_manifest(dest)
    assert manifest.damage == [] and summary["instances"] == len(manifest.entries) >= 5
    for path, entry in manifest.entries.items():
        assert sha256_file(dest / path) == (entry.size, entry.sha256)
    restored = cli("--archive", dest, "reindex", "--json")
    assert restored.returncode == 0 and lines(restored.stdout)[-1]["indexed"] == len(manifest.entries)
    assert cli("--archive", dest, "verify").returncode == 0
    # A second backup catches up with everything the server acknowledged.
    assert cli("backup", dest).returncode == 0
    assert len(read_manifest(dest).entries) == 65
    assert still_sending or len(manifest.entries) == 65  # overlap is likely, not guaranteed
