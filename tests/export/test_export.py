"""export: folder, zip and DICOM media; round trips through `pacsctl import` byte for byte, the
manifest, the read-back, atomic placement, partial failure (exit 3)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.fileset import FileSet

from pacsctl.archive.archive import Archive
from pacsctl.errors import OperationInterrupted, UsageError
from pacsctl.export.dicomdir import valid_file_id
from pacsctl.export.formats import ExportFormat
from pacsctl.export.run import ExportOptions, export
from pacsctl.export.target import MANIFEST_NAME
from pacsctl.storage.files import sha256_file
from tests.helpers import REPO_ROOT, invoke_cli, run_dcmtk
from tests.integrity.test_verify import flip_bit


def _hashes(archive: Archive) -> dict[str, str]:
    return {r["SOPInstanceUID"]: r["sha256"] for r in archive.index.instances()}


def _reimported(tmp_path: Path, source: Path) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of what `pacsctl import` stores from `source`."""
    target = tmp_path / "reimported"
    result = invoke_cli("--archive", str(target), "import", str(source), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    with Archive.open(target, create=False) as again:
        return _hashes(again)


def _manifest(root: Path) -> dict[str, str]:
    lines = (root / MANIFEST_NAME).read_text().splitlines()
    return {path: digest for digest, path in (line.split("  ", 1) for line in lines)}


@pytest.mark.parametrize("fmt", [ExportFormat.FOLDER, ExportFormat.ZIP, ExportFormat.DICOMDIR])
def test_export_then_import_gives_back_every_byte(archive: Archive, tmp_path: Path, fmt: ExportFormat) -> None:
    dest = tmp_path / ("out.zip" if fmt is ExportFormat.ZIP else "out")
    report = export(archive, dest, {}, ExportOptions(format=fmt))
    assert report.ok and report.summary.exported == len(_hashes(archive)) == 11
    assert _reimported(tmp_path, dest) == _hashes(archive)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_folder_export_has_a_manifest_sha256sum_checks_and_private_modes(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    report = export(archive, dest, {"PatientID": "P1"})
    assert report.summary.exported == 4 and report.summary.files == 5
    check = subprocess.run(["sha256sum", "-c", "--strict", MANIFEST_NAME], cwd=dest, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 4
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert len(files) == 5
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert all(p.relative_to(dest).as_posix().startswith("P1/") for p in files if p.name != MANIFEST_NAME)


def test_zip_is_readable_by_unzip_and_lists_the_manifest(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "out.zip"
    export(archive, dest, {"PatientID": "P2"}, ExportOptions(format=ExportFormat.ZIP))
    test = subprocess.run(["unzip", "-t", str(dest)], capture_output=True, text=True)
    assert test.returncode == 0, test.stdout
    assert "No errors detected" in test.stdout and MANIFEST_NAME in test.stdout


def test_dicomdir_media_file_ids_and_pydicom_reads_it(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "media"
    export(archive, dest, {}, ExportOptions(format=ExportFormat.DICOMDIR))
    fs = FileSet(dest / "DICOMDIR")
    assert len(fs) == 11
    assert {str(i.SOPInstanceUID) for i in fs} == set(_hashes(archive))
    for instance in fs:
        assert valid_file_id("/".join(Path(instance.FileID).parts))
        assert sha256_file(instance.path)[1] == _hashes(archive)[str(instance.SOPInstanceUID)]
    names = [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()]
    assert sorted(n for n in names if n not in ("DICOMDIR", MANIFEST_NAME)) == sorted(
        "/".join(Path(i.FileID).parts) for i in fs
    )
    assert set(_manifest(dest)) == {*names} - {MANIFEST_NAME}


@pytest.mark.interop
def test_dicomdir_is_read_by_dcmdump_and_dciodvfy(archive: Archive, tmp_path: Path) -> None:
    from tests.helpers import require_tool

    dest = tmp_path / "media"
    export(archive, dest, {}, ExportOptions(format=ExportFormat.DICOMDIR))
    dump = run_dcmtk("dcmdump", "-E", str(dest / "DICOMDIR"))  # -E: errors to stderr
    assert dump.stdout.count("ReferencedFileID") == 11 and "E:" not in dump.stderr
    assert dump.stdout.count("PATIENT") >= 3
    check = subprocess.run([require_tool("dciodvfy"), str(dest / "DICOMDIR")], capture_output=True, text=True)
    out = check.stdout + check.stderr
    assert "Error" not in out, out


def test_a_damaged_archive_file_is_left_out_and_reported_by_uid(archive: Archive, tmp_path: Path) -> None:
    victim = next(r for r in archive.index.instances() if r.get("PatientID") == "P1")
    flip_bit(archive.path_of(victim["path"]))
    dest = tmp_path / "out"
    result = invoke_cli("--archive", str(archive.root), "export", str(dest), "--patient", "P1", "--json")
    assert result.returncode == 3
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0] == {"type": "error", "SOPInstanceUID": victim["SOPInstanceUID"], "reason": records[0]["reason"]}
    assert "hash recorded at ingest" in records[0]["reason"]
    summary = records[-1]
    assert (summary["type"], summary["exported"], summary["errors"], summary["files"]) == ("summary", 3, 1, 4)
    assert summary["bytes"] == sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert len(_manifest(dest)) == 3 and "P1" not in result.stderr


def test_a_stopped_export_leaves_nothing(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    calls = []
    with pytest.raises(OperationInterrupted):
        export(archive, dest, {}, should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert list(tmp_path.iterdir()) == [] or not [p for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


KILLER = """
import os, signal, sys
from pathlib import Path
from pacsctl.archive.archive import Archive
from pacsctl.export.run import export, ExportOptions, ExportFormat
done = []
def progress(n, nbytes):
    done.append(n)
    if len(done) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
with Archive.open(sys.argv[1], create=False) as archive:
    export(archive, Path(sys.argv[2]), {}, ExportOptions(format=ExportFormat(sys.argv[3])), progress=progress)
"""


@pytest.mark.parametrize("fmt", ["folder", "zip"])
def test_a_killed_export_leaves_no_dest_and_the_next_one_cleans_up(archive: Archive, tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / ("out.zip" if fmt == "zip" else "out")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILLER, str(archive.root), str(dest), fmt], env=env, timeout=120)
    assert proc.returncode == -9
    assert not dest.exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{dest.name}.")
    export(archive, dest, {}, ExportOptions(format=ExportFormat(fmt)))
    assert dest.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_dest_that_exists_or_an_empty_selection_is_a_usage_error(archive: Archive, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="exists"):
        export(archive, tmp_path / "full", {})
    with pytest.raises(UsageError, match="no archived instance"):
        export(archive, tmp_path / "new", {"PatientID": "NOBODY"})
    (tmp_path / "empty").mkdir()
    assert export(archive, tmp_path / "empty", {"PatientID": "P2"}).summary.exported == 2


def test_cli_needs_a_selection_and_prints_a_summary(archive: Archive, tmp_path: Path) -> None:
    root = str(archive.root)
    result = invoke_cli("--archive", root, "export", str(tmp_path / "x"))
    assert result.returncode == 2 and "nothing selected" in result.stderr
    study = next(r["StudyInstanceUID"] for r in archive.index.instances() if r.get("PatientID") == "P2")
    result = invoke_cli("--archive", root, "export", str(tmp_path / "y.zip"), "--study", study, "-f", "zip")
    assert result.returncode == 0, result.stderr
    assert "exported 2 instances" in result.stderr and "zip" in result.stderr
    audit = invoke_cli("--archive", root, "audit", "--event", "export", "--json")
    assert study in audit.stdout


def test_file_systems_without_kernel_copies_get_plain_copies(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """copy_file_range answers EXDEV between file systems on older kernels (ext4 -> a vfat USB
    stick): the export copies the bytes itself, with the same checks."""
    import errno

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    dest = tmp_path / "usb"
    report = export(archive, dest, {})
    assert report.ok and report.summary.exported == 11
    assert _reimported(tmp_path, dest) == _hashes(archive)
