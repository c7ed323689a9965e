"""A damaged index file (a shard or a series manifest, cut short or garbled) is named, never an
internal error: commands exit 3 with "index damaged at PATH: run `pacsctl reindex`", `verify`
reports it, `reindex` rebuilds the index, and `serve` goes on without the damaged part."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from pacsctl.archive.archive import Archive
from pacsctl.config import Node
from pacsctl.dicom.attributes import INDEX_FIELDS
from pacsctl.errors import EXIT_INTEGRITY
from pacsctl.net import scu
from pacsctl.storage.index import STUDY_SHARD_DIGITS, Index, shard_of
from pacsctl.storage.files import safe_file_name
from tests.integrity.test_verify import make_archive


@pytest.fixture
def two_studies(archive_dir: Path, ct_factory: Any) -> tuple[list[Path], list[Path]]:
    first = ct_factory.series(3, patient_id="P1")
    second = ct_factory.series(2, patient_id="P2")
    make_archive(archive_dir, first + second).close()
    return first, second


def study_uid_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def study_shard(archive_dir: Path, study_uid: str) -> Path:
    return archive_dir / "index" / "studies" / f"{shard_of(study_uid, STUDY_SHARD_DIGITS)}.json"


def series_manifest(archive_dir: Path, series_uid: str) -> Path:
    digest = hashlib.sha1(series_uid.encode()).hexdigest()
    return archive_dir / "index" / "series" / digest[:2] / digest[2:4] / f"{safe_file_name(series_uid)}.json"


def cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damage", ["cut", "garbled"])
def test_ls_names_a_damaged_study_shard_and_exits_3(damage: str, two_studies, archive_dir: Path, cli) -> None:
    shard = study_shard(archive_dir, study_uid_of(two_studies[0][0]))
    if damage == "cut":
        cut(shard)
    else:
        shard.write_text(json.dumps({"docs": {"1": {"no key": 1}}}))
    proc = cli("ls")
    assert proc.returncode == EXIT_INTEGRITY, proc.stderr
    assert f"index damaged at {shard}: run `pacsctl reindex`" in proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_cut_series_manifest_is_named_by_ls_and_by_verify_then_reindex_repairs(two_studies, archive_dir: Path, cli) -> None:
    import pydicom

    series_uid = str(pydicom.dcmread(two_studies[0][0], stop_before_pixels=True).SeriesInstanceUID)
    manifest = series_manifest(archive_dir, series_uid)
    cut(manifest)

    listed = cli("ls", "--level", "instance", "--json")
    assert listed.returncode == EXIT_INTEGRITY and f"index damaged at {manifest}" in listed.stderr

    checked = cli("verify", "--json")
    assert checked.returncode == EXIT_INTEGRITY, checked.stderr
    records = [json.loads(line) for line in checked.stdout.splitlines()]
    problems = {(r["problem"], r["path"]) for r in records if r["type"] == "problem"}
    assert ("index_damaged", manifest.relative_to(archive_dir).as_posix()) in problems
    assert sum(p == "unknown_file" for p, _ in problems) == 3  # the series' instances: not lost, unindexed
    assert "internal error" not in checked.stderr

    rebuilt = cli("reindex")
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = cli("verify", "--json")
    assert again.returncode == 0, again.stdout
    assert json.loads(again.stdout.splitlines()[-1])["checked"] == 5


def test_a_writer_folding_into_a_damaged_shard_names_it(two_studies, archive_dir: Path, ct_factory: Any, cli) -> None:
    """`import` of one more instance of a study whose shard is damaged: exit 3, the file kept."""
    shard = study_shard(archive_dir, study_uid_of(two_studies[0][0]))
    cut(shard)
    extra = ct_factory(patient_id="P1", study_uid=study_uid_of(two_studies[0][0]))
    proc = cli("import", extra)
    assert proc.returncode == EXIT_INTEGRITY, proc.stderr
    assert f"index damaged at {shard}" in proc.stderr and "internal error" not in proc.stderr


def test_a_tolerant_index_reads_past_a_damaged_shard_and_moves_it_aside_when_rewriting(
    two_studies, archive_dir: Path, ct_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from pacsctl.storage.index import DAMAGED, IndexDamagedError

    first_study = study_uid_of(two_studies[0][0])
    shard = study_shard(archive_dir, first_study)
    cut(shard)
    damaged_bytes = shard.read_bytes()
    index = Index(archive_dir / "index", archive_dir / "tmp", INDEX_FIELDS, files_root=archive_dir)
    with pytest.raises(IndexDamagedError):
        index.studies()
    index.tolerate_damage()
    assert [s["StudyInstanceUID"] for s in index.studies()] == [study_uid_of(two_studies[1][0])]
    assert "index damaged at" in caplog.text

    with Archive.open(archive_dir) as archive:
        archive.index.tolerate_damage()
        results = archive.ingest([(p.read_bytes(), str(p)) for p in [ct_factory(study_uid=first_study, patient_id="P1")]])
        assert [r.status for r in results] == ["stored"]
    [aside] = (archive_dir / "index" / DAMAGED).iterdir()
    assert aside.read_bytes() == damaged_bytes  # kept for a look, out of the way
    assert json.loads(shard.read_text())  # rewritten whole
    assert index.damaged_files() == [aside]  # verify keeps saying so until a reindex


def _find_studies(port: int) -> list[Dataset]:
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = ""
    ident.PatientID = ""
    return list(scu.find(Node("srv", "PACSCTL", "127.0.0.1", port), ident))


def test_serve_answers_and_stores_without_the_damaged_shard(two_studies, archive_dir: Path, serve_factory, ct_factory: Any) -> None:
    first, second = two_studies
    shard = study_shard(archive_dir, study_uid_of(first[0]))
    cut(shard)
    srv = serve_factory(archive_dir)
    answers = _find_studies(srv.port)
    assert [str(a.StudyInstanceUID) for a in answers] == [study_uid_of(second[0])]
    new = ct_factory.series(2, patient_id="P3")
    assert all(r.ok for r in scu.store(Node("srv", "PACSCTL", "127.0.0.1", srv.port), new))
    assert {str(a.StudyInstanceUID) for a in _find_studies(srv.port)} >= {study_uid_of(second[0]), study_uid_of(new[0])}
    assert srv.stop() == 0
    err = srv.stderr()
    assert f"index damaged at {shard}" in err and "run `pacsctl reindex`" in err
    assert "Traceback" not in err and "JSONDecodeError" not in err
