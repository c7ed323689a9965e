"""Duplicates are decided by the data set, not the File Meta group, wherever ingest comes from.

A study received by `serve` is stored with a File Meta group of serve's own (Implementation
Class UID, Source AE Title); the same images imported from the modality's files differ there
and nowhere else. They are duplicates, in either order; a different data set stays a conflict.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from pacsctl.archive.archive import DUPLICATE, QUARANTINED, STORED, Archive
from pacsctl.config import Node
from pacsctl.dicom.instance import data_set_identity, data_set_identity_of_file
from pacsctl.net import scu
from tests.helpers import run_cli

STATUS_CONFLICT_KEPT = 0xB000


def _node(srv) -> Node:
    return Node("srv", srv.aet, "127.0.0.1", srv.port)


def _summary(stdout: str) -> dict:
    return json.loads(stdout.splitlines()[-1])


def _archived(archive_dir: Path, path: Path) -> Path:
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    return archive_dir / Archive.object_relpath(uid)


def _with_other_meta(path: Path, out: Path) -> bytes:
    """The same data set bytes behind another writer's File Meta group."""
    ds = pydicom.dcmread(path)
    ds.file_meta.ImplementationClassUID = "1.2.3.4.5.6.7"
    ds.file_meta.ImplementationVersionName = "OTHER_WRITER"
    ds.file_meta.SourceApplicationEntityTitle = "SOMEONE"
    ds.save_as(out, enforce_file_format=True)
    return out.read_bytes()


def test_meta_only_difference_is_a_duplicate_in_ingest_and_dry_run(archive_dir: Path, ct_factory, tmp_path: Path) -> None:
    original = ct_factory()
    other = _with_other_meta(original, tmp_path / "other.dcm")
    assert other != original.read_bytes()
    assert data_set_identity(other) == data_set_identity(original.read_bytes()) is not None
    with Archive.open(archive_dir) as archive:
        assert [r.status for r in archive.ingest([(original.read_bytes(), "a")])] == [STORED]
        planned = archive.ingest([(other, "b")], dry_run=True)
        [result] = archive.ingest([(other, "b")])
        assert (planned[0].status, result.status) == (DUPLICATE, DUPLICATE)
        assert not result.conflict and "File Meta" in result.reason
        assert archive.quarantined() == []
        # the archived copy is kept as it was, and its index record describes it
        assert archive.path_of(result.path).read_bytes() == original.read_bytes()
        [record] = archive.index.instances()
        assert record["size"] == original.stat().st_size


def test_study_received_by_serve_then_imported_is_all_duplicates(serve_factory, archive_dir: Path, ct_factory) -> None:
    files = ct_factory.series(6, patient_id="P1")
    srv = serve_factory(archive_dir)
    assert all(r.ok for r in scu.store(_node(srv), files))
    assert srv.stop() == 0
    # serve wrote its own File Meta group: the files differ from the modality's, the data sets not
    stored = _archived(archive_dir, files[0])
    assert stored.read_bytes() != files[0].read_bytes()
    assert data_set_identity_of_file(stored) == data_set_identity_of_file(files[0])

    out = run_cli("--archive", archive_dir, "import", files[0].parent, "--json")
    assert out.returncode == 0, out.stderr
    summary = _summary(out.stdout)
    assert (summary["duplicates"], summary["imported"], summary["quarantined"]) == (6, 0, 0)
    assert not list((archive_dir / "quarantine").rglob("*.dcm"))


def test_study_imported_then_received_by_serve_is_all_duplicates(serve_factory, archive_dir: Path, ct_factory) -> None:
    files = ct_factory.series(6, patient_id="P1")
    out = run_cli("--archive", archive_dir, "import", files[0].parent, "--json")
    assert out.returncode == 0, out.stderr
    before = {p: _archived(archive_dir, p).read_bytes() for p in files}
    srv = serve_factory(archive_dir)
    results = scu.store(_node(srv), files)
    assert [r.status for r in results] == [0x0000] * 6
    assert srv.stop() == 0
    assert not list((archive_dir / "quarantine").rglob("*.dcm"))
    assert {p: _archived(archive_dir, p).read_bytes() for p in files} == before


def test_a_real_conflict_stays_a_conflict_through_serve_and_import(serve_factory, archive_dir: Path, ct_factory, tmp_path: Path) -> None:
    original = ct_factory(patient_id="P1", pixel_seed=1)
    uid = pydicom.dcmread(original).SOPInstanceUID
    changed = tmp_path / "changed" / "x.dcm"
    ct_factory(directory=changed.parent, sop_uid=uid, patient_id="P1", pixel_seed=2)
    srv = serve_factory(archive_dir)
    assert all(r.ok for r in scu.store(_node(srv), [original]))
    [result] = scu.store(_node(srv), [next(changed.parent.iterdir())])
    assert result.status == STATUS_CONFLICT_KEPT
    assert srv.stop() == 0

    out = run_cli("--archive", archive_dir, "import", changed.parent, "--json")
    assert out.returncode == 3, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert records[0]["status"] == QUARANTINED and records[0]["reason"].startswith("conflict:")
    assert _summary(out.stdout)["quarantined"] == 1
    # serve's refused copy and import's (each with its writer's File Meta) share one reason
    reasons = {json.loads(p.read_text())["reason"] for p in (archive_dir / "quarantine").rglob("*.json")}
    assert len(reasons) == 1 and next(iter(reasons)).startswith("conflict: same SOP Instance UID")


@pytest.mark.parametrize("policy", ["keep", "replace"])
def test_meta_only_difference_is_never_replaced(archive_dir: Path, ct_factory, tmp_path: Path, policy: str) -> None:
    original = ct_factory()
    other = _with_other_meta(original, tmp_path / "other.dcm")
    with Archive.open(archive_dir) as archive:
        archive.ingest([(original.read_bytes(), "a")])
        [result] = archive.ingest([(other, "b")], on_conflict=policy)
        assert result.status == DUPLICATE
        assert archive.path_of(result.path).read_bytes() == original.read_bytes()
        assert archive.quarantined() == []
