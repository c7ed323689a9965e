"""The sharded TinyDB index with per-process journals: several processes, crashes, counts."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

from pacsctl.storage import index as index_mod
from pacsctl.storage.files import ensure_dir
from pacsctl.storage.index import Index
from pacsctl.dicom.attributes import INDEX_FIELDS
from tests.storage.checks import run_python, start_python


def rec(patient: str, study: str, series: str, sop: str, modality: str = "CT", **extra) -> dict:
    """An index record shaped like `pacsctl.dicom.attributes.index_record` makes them."""
    record = {
        "PatientID": patient, "PatientName": f"NAME^{patient}", "PatientBirthDate": "", "PatientSex": "",
        "StudyInstanceUID": study, "StudyDate": "20240101", "StudyTime": "", "AccessionNumber": "",
        "StudyID": "", "StudyDescription": "", "ReferringPhysicianName": "",
        "SeriesInstanceUID": series, "Modality": modality, "SeriesNumber": 1, "SeriesDescription": "",
        "SeriesDate": "", "BodyPartExamined": "",
        "SOPInstanceUID": sop, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "InstanceNumber": 1,
        "TransferSyntaxUID": "1.2.840.10008.1.2.1", "SpecificCharacterSet": "",
        "path": f"objects/{sop}.dcm", "size": 100, "sha256": "0" * 64,
    }
    record.update(extra)
    return record


def grid(prefix: str, patients: int, studies: int, series: int, instances: int, modality: str = "CT") -> list[dict]:
    """patients x studies x series x instances records with UIDs derived from `prefix`."""
    out = []
    for p in range(patients):
        for s in range(studies):
            for e in range(series):
                for i in range(instances):
                    out.append(rec(f"{prefix}P{p}", f"1.{p}.{s}", f"1.{p}.{s}.{e}", f"1.{p}.{s}.{e}.{i}", modality))
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "archive"


def open_index(root: Path) -> Index:
    return Index(root / "index", ensure_dir(root / "tmp"), INDEX_FIELDS)


def journals(root: Path) -> list[Path]:
    return sorted((root / "index" / "journal").glob("*"))


INDEX_CHILD = """
import json, os, sys
from pathlib import Path
from pacsctl.storage.files import ensure_dir
from pacsctl.storage.index import Index
from pacsctl.dicom.attributes import INDEX_FIELDS
root = Path(sys.argv[1])
index = Index(root / "index", ensure_dir(root / "tmp"), INDEX_FIELDS)
records = json.loads(sys.stdin.readline())
index.add(records, durable=True)
print("journaled", flush=True)
"""


def test_counts_are_exact(root: Path) -> None:
    index = open_index(root)
    records = [rec("P1", "1.1", "1.1.1", f"1.1.1.{i}", "CT") for i in range(5)]
    records += [rec("P1", "1.1", "1.1.2", f"1.1.2.{i}", "PT") for i in range(3)]
    records += [rec("P1", "1.2", "1.2.1", f"1.2.1.{i}", "MR") for i in range(2)]
    records += [rec("P2", "2.1", "2.1.1", "2.1.1.1", "")]
    index.add(records)
    index.add(records[:4])  # the same instances again: no double counting
    index.flush()
    studies = {s["StudyInstanceUID"]: s for s in index.studies()}
    assert studies["1.1"]["NumberOfStudyRelatedInstances"] == 8
    assert studies["1.1"]["NumberOfStudyRelatedSeries"] == 2
    assert studies["1.1"]["ModalitiesInStudy"] == ["CT", "PT"]
    assert studies["1.2"]["ModalitiesInStudy"] == ["MR"]
    assert studies["2.1"]["ModalitiesInStudy"] == [] and studies["2.1"]["NumberOfStudyRelatedInstances"] == 1
    patients = {p["PatientID"]: p for p in index.patients()}
    assert patients["P1"]["NumberOfPatientRelatedStudies"] == 2
    assert patients["P1"]["NumberOfPatientRelatedSeries"] == 3
    assert patients["P1"]["NumberOfPatientRelatedInstances"] == 10
    series = {s["SeriesInstanceUID"]: s for s in index.series(study_uids=["1.1"])}
    assert {k: v["NumberOfSeriesRelatedInstances"] for k, v in series.items()} == {"1.1.1": 5, "1.1.2": 3}
    assert len(index.instances()) == 11
    assert len(list(index.iter_instances())) == 11
    assert [s["StudyInstanceUID"] for s in index.studies(patient_ids=["P2"])] == ["2.1"]
    assert index.studies(patient_ids=["nobody"]) == []


def test_reads_see_journaled_records_of_a_live_writer_before_any_fold(root: Path) -> None:
    open_index(root)
    writer = start_python(INDEX_CHILD + "sys.stdin.readline()\n", str(root), stdin=__import__("subprocess").PIPE)
    records = grid("W", 2, 2, 2, 3)
    writer.stdin.write(json.dumps(records) + "\n")
    writer.stdin.flush()
    assert writer.stdout.readline().strip() == "journaled"
    try:
        assert not list((root / "index").glob("studies/*.json"))  # nothing folded yet
        reader = open_index(root)
        assert len(reader.instances()) == len(records)
        assert reader.flush() == 0  # a live writer's journal is not taken from it
        studies = reader.studies(patient_ids=["WP1"])
        assert sorted(s["StudyInstanceUID"] for s in studies) == ["1.1.0", "1.1.1"]
        assert all(s["NumberOfStudyRelatedInstances"] == 6 for s in studies)
        # and from another process too
        out = run_python(
            "import sys; from pathlib import Path; from pacsctl.storage.index import Index; from pacsctl.dicom.attributes import INDEX_FIELDS;"
            "r = Path(sys.argv[1]); print(len(Index(r / 'index', r / 'tmp', INDEX_FIELDS).instances()))", str(root)
        )
        assert out.stdout.strip() == str(len(records))
    finally:
        writer.stdin.write("\n")
        writer.stdin.close()
        writer.wait(30)


def test_journal_of_a_killed_writer_is_folded_by_the_next_process(root: Path) -> None:
    open_index(root)
    writer = start_python(INDEX_CHILD + "import time; time.sleep(60)\n", str(root), stdin=__import__("subprocess").PIPE)
    records = grid("K", 3, 1, 2, 5)
    writer.stdin.write(json.dumps(records) + "\n")
    writer.stdin.flush()
    assert writer.stdout.readline().strip() == "journaled"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(10)
    assert len(journals(root)) == 1
    index = open_index(root)
    assert index.flush() == len(records)
    assert journals(root) == []
    assert sum(s["NumberOfStudyRelatedInstances"] for s in index.studies()) == len(records)
    # the fold is on disk: a third process sees it without any journal
    out = run_python(
        "import sys; from pathlib import Path; from pacsctl.storage.index import Index; from pacsctl.dicom.attributes import INDEX_FIELDS;"
        "r = Path(sys.argv[1]); print(len(Index(r / 'index', r / 'tmp', INDEX_FIELDS).instances()))", str(root)
    )
    assert out.stdout.strip() == str(len(records))


def test_torn_last_journal_line_is_ignored(root: Path) -> None:
    index = open_index(root)
    records = grid("T", 1, 1, 1, 4)
    journal = root / "index" / "journal" / "999999-dead.ndjson"
    lines = [json.dumps(r).encode() + b"\n" for r in records]
    torn = json.dumps(rec("TP0", "1.0.0", "1.0.0.0", "torn.uid")).encode()[:57]
    journal.write_bytes(b"".join(lines) + torn)
    assert len(index.instances()) == 4  # the reader skips it
    assert index.flush() == 4
    assert {r["SOPInstanceUID"] for r in index.instances()} == {r["SOPInstanceUID"] for r in records}


def test_failed_append_does_not_swallow_the_next_record(root: Path, tmp_path: Path) -> None:
    """A journal append that fails half way (disk full) must not glue a torn line onto the
    next record: after the failure, later records are still readable."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or os.system(f"mount -t tmpfs -o size=64k tmpfs {mnt} 2>/dev/null") != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        index = Index(mnt / "index", ensure_dir(mnt / "tmp"), INDEX_FIELDS)
        big = [rec("F", "1.1", "1.1.1", f"1.1.1.{i}", StudyDescription="x" * 2000) for i in range(100)]
        ok = [rec("F", "1.1", "1.1.1", "first")]
        index.add(ok)
        with pytest.raises(OSError):
            index.add(big)  # ~200 kB into 64 kB
        # nothing of the failed batch may stay behind (it would be glued to the next line)
        assert {r["SOPInstanceUID"] for r in index.instances()} == {"first"}
        index.add([rec("F", "1.1", "1.1.1", "after")], durable=True)
        uids = {r["SOPInstanceUID"] for r in index.instances()}
        assert {"first", "after"} <= uids
    finally:
        index._seal_journal()
        os.system(f"umount {mnt}")


def test_many_processes_at_once_nothing_lost(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four processes journal and fold (every 300 records) at the same time, sharing studies."""
    open_index(root)
    code = """
import sys
from pathlib import Path
from pacsctl.storage import index as m
from pacsctl.dicom.attributes import INDEX_FIELDS
from pacsctl.storage.files import ensure_dir
m.JOURNAL_LIMIT = 300
root, me = Path(sys.argv[1]), int(sys.argv[2])
index = m.Index(root / "index", ensure_dir(root / "tmp"), INDEX_FIELDS)
for batch in range(20):
    records = []
    for i in range(60):
        n = batch * 60 + i
        # studies shared by every writer; series and instances are per writer
        study = f"9.{n % 7}"
        records.append({"PatientID": f"P{n % 7}", "StudyInstanceUID": study,
                        "SeriesInstanceUID": f"{study}.{me}", "Modality": ["CT", "MR"][me % 2],
                        "SOPInstanceUID": f"{study}.{me}.{n}", "path": f"p/{me}/{n}", "size": n, "sha256": ""})
    index.add(records, durable=False)
index.close()
"""
    procs = [start_python(code, str(root), str(me)) for me in range(4)]
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    index = open_index(root)
    assert journals(root) == []
    assert len(index.instances()) == 4 * 20 * 60
    studies = index.studies()
    assert len(studies) == 7
    assert sum(s["NumberOfStudyRelatedInstances"] for s in studies) == 4800
    assert all(s["NumberOfStudyRelatedSeries"] == 4 for s in studies)
    assert all(s["ModalitiesInStudy"] == ["CT", "MR"] for s in studies)


def test_journal_created_while_another_process_folds_is_not_lost(root: Path) -> None:
    """A writer opening its journal while another process folds in a loop: every record of
    every short-lived writer ends up in the index (a fresh journal must never be claimed and
    deleted before its writer holds it)."""
    open_index(root)
    folder = start_python(
        "import sys, time\nfrom pathlib import Path\nfrom pacsctl.storage.index import Index\nfrom pacsctl.dicom.attributes import INDEX_FIELDS\n"
        "r = Path(sys.argv[1]); ix = Index(r / 'index', r / 'tmp', INDEX_FIELDS); end = time.time() + 6\n"
        "while time.time() < end: ix.flush()\n",
        str(root),
    )
    run_python(
        "import sys\nfrom pathlib import Path\nfrom pacsctl.storage.index import Index\nfrom pacsctl.dicom.attributes import INDEX_FIELDS\n"
        "r = Path(sys.argv[1])\n"
        "for i in range(1500):\n"
        "    ix = Index(r / 'index', r / 'tmp', INDEX_FIELDS)\n"
        "    ix.add([{'PatientID': 'P', 'StudyInstanceUID': '1', 'SeriesInstanceUID': '1.1',"
        " 'SOPInstanceUID': f'1.1.{i}', 'path': str(i), 'size': 1, 'sha256': ''}], durable=False)\n"
        "    ix._seal_journal()\n",
        str(root), timeout=120,
    )
    folder.communicate(timeout=60)
    index = open_index(root)
    index.flush()
    assert len(index.instances()) == 1500


def test_index_files_are_private(root: Path) -> None:
    index = open_index(root)
    index.add(grid("M", 2, 2, 1, 2))
    reader = open_index(root)
    reader.studies()
    index.flush()
    index.add(grid("N", 1, 1, 1, 1))  # a live journal as well
    paths = [root / "index", *(root / "index").rglob("*")]
    assert any(p.suffix == ".ndjson" for p in paths)
    assert any(p.parent.name == "studies" for p in paths)
    for path in paths:
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_crash_mid_fold_is_repaired_by_the_next_fold(root: Path) -> None:
    """kill -9 while a process is folding: the journals stay and the next fold completes."""
    code = """
import sys, os, signal
from pathlib import Path
from pacsctl.storage import index as m
from pacsctl.dicom.attributes import INDEX_FIELDS
from pacsctl.storage.files import ensure_dir
root = Path(sys.argv[1])
ix = m.Index(root / "index", ensure_dir(root / "tmp"), INDEX_FIELDS)
recs = [{"PatientID": f"P{i % 50}", "StudyInstanceUID": f"1.{i % 100}", "SeriesInstanceUID": f"1.{i % 100}.{i % 3}",
         "Modality": "CT", "SOPInstanceUID": f"2.{i}", "path": str(i), "size": 1, "sha256": ""} for i in range(1500)]
ix.add(recs)
renamed = 0
original = os.replace
def replace(*args, **kwargs):  # dies half way through renaming the fold's shards into place
    global renamed
    original(*args, **kwargs)
    renamed += 1
    if renamed == 150:
        os.kill(os.getpid(), signal.SIGKILL)
m.os.replace = replace
ix.flush()
"""
    proc = run_python(code, str(root), check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(journals(root)) == 1
    index = open_index(root)
    index.flush()
    assert journals(root) == []
    studies = index.studies()
    assert len(studies) == 100
    assert sum(s["NumberOfStudyRelatedInstances"] for s in studies) == 1500
    assert sum(s["NumberOfStudyRelatedSeries"] for s in studies) == 300
    assert len({r["SOPInstanceUID"] for r in index.iter_instances()}) == 1500


def test_journal_limit_folds_automatically(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "JOURNAL_LIMIT", 10)
    index = open_index(root)
    index.add(grid("L", 1, 1, 1, 25))
    assert list((root / "index").glob("series/*/*/*.json"))
    assert journals(root) == []
    assert len(index.instances()) == 25


def test_narrowed_reads_with_pending_records_equal_full_reads(root: Path) -> None:
    """Lookups by PatientID / StudyInstanceUID apply only the pending records that matter;
    they must give exactly what a full read narrowed afterwards gives, also when pending
    records add studies, change a study's patient or move instances between studies."""
    import random

    rng = random.Random(7)
    folded = open_index(root)
    base = [rec(f"P{p}", f"1.{p}.{s}", f"1.{p}.{s}.{e}", f"1.{p}.{s}.{e}.{i}", rng.choice(["CT", "MR"]))
            for p in range(6) for s in range(2) for e in range(2) for i in range(3)]
    folded.add(base)
    folded.flush()
    pending = []
    for n in range(40):  # new instances, new studies, a patient change, moves between studies
        p, s = rng.randrange(8), rng.randrange(3)
        pending.append(rec(f"P{p}", f"1.{p}.{s}", f"1.{p}.{s}.9", f"9.{n}", "PT"))
    pending.append(rec("P9", "1.1.0", "1.1.0.0", "1.1.0.0.0"))  # study 1.1.0 now says patient P9
    pending.append(rec("P2", "1.2.7", "1.2.7.1", "1.3.0.0.0", ReplacedStudyInstanceUID="1.3.0",
                       ReplacedSeriesInstanceUID="1.3.0.0"))
    writer = open_index(root)
    writer.add(pending)  # stays a live, unfolded journal
    reader = open_index(root)
    all_studies = reader.studies()
    all_instances = reader.instances()
    key = lambda rows: sorted(json.dumps(r, sort_keys=True) for r in rows)
    for p in [f"P{p}" for p in range(10)]:
        assert key(reader.studies(patient_ids=[p])) == key([s for s in all_studies if s["PatientID"] == p]), p
        assert key(reader.instances(patient_ids=[p])) == key([i for i in all_instances if i["PatientID"] == p]), p
    for study in all_studies:
        uid = study["StudyInstanceUID"]
        assert reader.studies(study_uids=[uid]) == [study]
        assert key(reader.series(study_uids=[uid])) == key([s for s in reader.series() if s["StudyInstanceUID"] == uid])
    full_patients = {p["PatientID"]: p for p in reader.patients()}
    for pid, patient in full_patients.items():
        assert reader.patients([pid]) == [patient]
    writer._seal_journal()
