"""Bulk import of a messy tree: every file accounted, re-runs idempotent, jobs agree."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest

from pacsctl.archive.archive import DUPLICATE, STORED, Archive, IngestResult
from pacsctl.ingest.importer import collect_sources, import_sources
from tests.storage.checks import bad_modes, consistency
from tests.storage.trees import Expected, bare_dataset_bytes, messy_tree


@pytest.fixture
def tree(tmp_path: Path, testdata_dir: Path) -> tuple[Path, Expected]:
    root = tmp_path / "incoming"
    root.mkdir()
    return root, messy_tree(root, testdata_dir)


def run_import(archive_dir: Path, paths: list[Path], **kwargs) -> tuple[object, list[IngestResult]]:
    results: list[IngestResult] = []
    with Archive.open(archive_dir) as archive:
        summary = import_sources(archive, collect_sources([str(p) for p in paths]), on_result=results.append, **kwargs)
    return summary, results


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_matches(exp: Expected, summary, results: list[IngestResult]) -> None:
    by_origin: dict[str, list[str]] = {}
    for r in results:
        by_origin.setdefault(r.origin, []).append(r.status)
    assert all(len(v) == 1 for v in by_origin.values()), {k: v for k, v in by_origin.items() if len(v) > 1}
    assert {o for o, [s] in by_origin.items() if s == STORED} == exp.stored
    assert {o for o, [s] in by_origin.items() if s == "quarantined"} == exp.quarantined
    assert {o for o, [s] in by_origin.items() if s == "skipped"} == exp.skipped
    assert summary.files == exp.files == len(results)
    assert summary.files == summary.imported + summary.duplicates + summary.quarantined + summary.skipped
    for r in results:
        if r.status in ("quarantined", "skipped"):
            assert r.reason, r


def test_messy_tree_every_file_accounted(tree, archive_dir: Path) -> None:
    root, exp = tree
    summary, results = run_import(archive_dir, [root])
    assert_matches(exp, summary, results)
    assert summary.imported == len(exp.stored) and summary.duplicates == 0
    with Archive.open(archive_dir) as archive:
        assert {r["SOPInstanceUID"] for r in archive.index.instances()} == exp.sop_uids
        assert len(list(archive.quarantined())) == len(exp.quarantined)
    assert consistency(archive_dir) == []
    assert bad_modes(archive_dir) == []
    assert list((archive_dir / "tmp").iterdir()) == []


def test_reimport_counts_everything_as_duplicate(tree, archive_dir: Path) -> None:
    root, exp = tree
    first, _ = run_import(archive_dir, [root])
    objects = snapshot(archive_dir / "objects")
    quarantine = snapshot(archive_dir / "quarantine")
    second, results = run_import(archive_dir, [root])
    assert second.imported == 0
    assert second.duplicates == first.imported
    assert second.quarantined == first.quarantined and second.skipped == first.skipped
    assert {r.origin for r in results if r.status == DUPLICATE} == exp.stored
    assert snapshot(archive_dir / "objects") == objects
    assert set(snapshot(archive_dir / "quarantine")) == set(quarantine)  # same names: nothing added
    assert consistency(archive_dir) == []


def test_dry_run_writes_nothing_and_predicts_the_run(tree, archive_dir: Path) -> None:
    root, exp = tree
    Archive.open(archive_dir).close()
    before = snapshot(archive_dir)
    dry, results = run_import(archive_dir, [root], dry_run=True)
    assert snapshot(archive_dir) == before
    assert dry.dry_run
    assert_matches(exp, dry, results)
    real, _ = run_import(archive_dir, [root])
    assert (dry.imported, dry.duplicates, dry.quarantined, dry.skipped) == (
        real.imported, real.duplicates, real.quarantined, real.skipped)
    after_real = snapshot(archive_dir)
    again, _ = run_import(archive_dir, [root], dry_run=True)
    assert again.imported == 0 and again.duplicates == real.imported
    assert snapshot(archive_dir) == after_real


def test_two_jobs_give_the_same_result_as_one(tree, tmp_path: Path) -> None:
    root, exp = tree
    one, results_one = run_import(tmp_path / "a1", [root], jobs=1)
    two, results_two = run_import(tmp_path / "a2", [root], jobs=2)
    assert_matches(exp, two, results_two)
    key = lambda rs: sorted((r.origin, r.status, r.sop_instance_uid, r.path if r.status != "quarantined" else "") for r in rs)
    assert key(results_one) == key(results_two)
    assert snapshot(tmp_path / "a1" / "objects") == snapshot(tmp_path / "a2" / "objects")
    index_one = Archive.open(tmp_path / "a1").index
    index_two = Archive.open(tmp_path / "a2").index
    strip = lambda rows: sorted(json.dumps(r, sort_keys=True) for r in rows)
    assert strip(index_one.instances()) == strip(index_two.instances())
    assert strip(index_one.studies()) == strip(index_two.studies())
    assert consistency(tmp_path / "a2") == []
    assert list((tmp_path / "a2" / "index" / "journal").glob("*.ndjson")) == []  # workers' journals folded


def test_single_files_and_zip_given_directly(tree, archive_dir: Path) -> None:
    root, exp = tree
    single = root / "real" / "CT_small.dcm"
    zpath = root / "upload" / "study.zip"
    summary, results = run_import(archive_dir, [single, zpath])
    assert summary.imported == 3 and summary.skipped == 1  # 1 file + 2 zip members, README skipped
    assert {r.origin for r in results} == {str(single)} | {o for o in exp.stored | exp.skipped if o.startswith(f"{zpath}!")}
    assert zpath.exists()  # read in place, not unpacked or moved


def test_bare_data_set_gets_a_proper_file_meta(tmp_path: Path, archive_dir: Path, ct_factory) -> None:
    src = ct_factory()
    original = pydicom.dcmread(src)
    for implicit in (True, False):
        bare = tmp_path / f"bare-{implicit}"
        data = bare_dataset_bytes(src, implicit=implicit)
        bare.write_bytes(data)
        archive_dir_i = archive_dir.with_name(f"{archive_dir.name}-{implicit}")
        summary, [result] = run_import(archive_dir_i, [bare])
        assert result.status == STORED, result
        stored = (archive_dir_i / result.path).read_bytes()
        assert stored[128:132] == b"DICM"
        assert stored.endswith(data)  # the data set's bytes are kept exactly
        ds = pydicom.dcmread(io.BytesIO(stored))
        meta = ds.file_meta
        assert meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert meta.TransferSyntaxUID == ("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")
        assert "FileMetaInformationGroupLength" in meta and "ImplementationClassUID" in meta
        assert ds.PatientID == original.PatientID and ds.PixelData == original.PixelData
        dcmftest = Path("/usr/bin/dcmftest")  # DCMTK, an independent reader: a proper Part-10 file?
        if dcmftest.exists():
            import subprocess

            checked = subprocess.run([str(dcmftest), str(archive_dir_i / result.path)], capture_output=True, text=True)
            assert checked.returncode == 0 and checked.stdout.startswith("yes:"), checked.stdout + checked.stderr


def test_unreadable_files_and_folders_are_skipped_with_reason(tmp_path: Path, ct_factory) -> None:
    """chmod 000 cannot stop root; run the import as root *without* the capabilities that
    bypass file permissions (setpriv drops CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH), so the
    kernel really answers EACCES."""
    import os
    import shutil
    import subprocess
    import sys

    from tests.storage.checks import python_env

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to meet a real permission error")
    tree = tmp_path / "perm"
    ct_factory("good.dcm", directory=tree)
    locked = ct_factory("locked.dcm", directory=tree)
    locked.chmod(0)
    (tree / "closed").mkdir()
    ct_factory("hidden.dcm", directory=tree / "closed")
    (tree / "closed").chmod(0)
    code = (
        "import sys, json\n"
        "from pacsctl.archive.archive import Archive\n"
        "from pacsctl.ingest.importer import collect_sources, import_sources\n"
        "out = []\n"
        "with Archive.open(sys.argv[2]) as a:\n"
        "    s = import_sources(a, collect_sources([sys.argv[1]]), jobs=int(sys.argv[3]),\n"
        "                       on_result=lambda r: out.append([r.origin, r.status, r.reason]))\n"
        "print(json.dumps({'summary': s.as_dict(), 'results': out}))\n"
    )
    try:
        for jobs in ("1", "2"):
            archive = tmp_path / f"archive-{jobs}"
            proc = subprocess.run(
                [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", sys.executable, "-c", code,
                 str(tree), str(archive), jobs],
                env=python_env(), capture_output=True, text=True, timeout=60,
            )
            assert proc.returncode == 0, proc.stderr
            report = json.loads(proc.stdout)
            statuses = {Path(o).name: (s, r) for o, s, r in report["results"]}
            assert statuses["good.dcm"][0] == STORED
            assert statuses["locked.dcm"][0] == "skipped" and "ermission" in statuses["locked.dcm"][1]
            assert statuses["closed"][0] == "skipped" and "ermission" in statuses["closed"][1]
            summary = report["summary"]
            assert summary["files"] == 3 == summary["imported"] + summary["skipped"]
            assert summary["unreadable"] == 2  # could not be read: the CLI exits 3 for these
    finally:
        (tree / "closed").chmod(0o700)


def test_batches_are_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    from pacsctl.ingest import importer
    from pacsctl.ingest.sources import Source

    small = [Source(f"s{i}", size=1000) for i in range(importer.BATCH_FILES * 2 + 5)]
    assert [len(b) for b in importer._batches(small)] == [importer.BATCH_FILES, importer.BATCH_FILES, 5]
    big = importer.BATCH_BYTES // 3 + 1
    mixed = [Source("a", size=big), Source("b", size=big), Source("c", size=big), Source("huge", size=10 * importer.BATCH_BYTES), Source("d", size=1)]
    assert [[s.path for s in b] for b in importer._batches(mixed)] == [["a", "b"], ["c"], ["huge"], ["d"]]
    (tmp_path / "f.dcm").write_bytes(b"x" * 1234)
    [found] = collect_sources([str(tmp_path / "f.dcm")])
    assert found.size == 1234 and found == Source(str(tmp_path / "f.dcm"))


def test_damaged_and_encrypted_zip_members_are_accounted(tmp_path: Path, archive_dir: Path, ct_factory) -> None:
    """A member failing its CRC, a password-protected zip and a zip cut short: each input
    is reported with a reason, the good members are imported, nothing stops the run."""
    import shutil
    import subprocess
    import zipfile

    cts = ct_factory.series(3)
    crc = tmp_path / "crc.zip"
    with zipfile.ZipFile(crc, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in cts:
            zf.write(p, p.name)
    raw = bytearray(crc.read_bytes())
    at = raw.find(cts[1].read_bytes()[200:240])  # flip a byte inside the second member's data
    raw[at] ^= 0xFF
    crc.write_bytes(bytes(raw))
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bytes(raw[: len(raw) // 2]))  # no central directory
    inputs = [crc, cut]
    if shutil.which("zip"):
        locked = tmp_path / "locked.zip"
        subprocess.run(["zip", "-q", "-j", "-P", "secret", str(locked), str(cts[0])], check=True)
        inputs.append(locked)
    summary, results = run_import(archive_dir, inputs)
    by = {r.origin: r for r in results}
    assert by[f"{crc}!{cts[0].name}"].status == STORED and by[f"{crc}!{cts[2].name}"].status == STORED
    damaged = by[f"{crc}!{cts[1].name}"]
    assert damaged.status == "skipped" and "CRC" in damaged.reason
    assert by[str(cut)].status == "skipped" and "zip" in by[str(cut)].reason
    if len(inputs) == 3:
        enc = by[f"{inputs[2]}!{cts[0].name}"]
        assert enc.status == "skipped" and "encrypted" in enc.reason
    assert summary.files == len(results) == summary.imported + summary.duplicates + summary.quarantined + summary.skipped
    assert consistency(archive_dir) == []
