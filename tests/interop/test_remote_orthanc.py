"""`pacsctl echo/send/query/move/get` against real Orthanc and DCMTK storescp peers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.helpers import free_port, run_cli

pytestmark = pytest.mark.interop


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _summary(proc: Any) -> dict[str, Any]:
    records = _json_lines(proc.stdout)
    assert records and records[-1]["type"] == "summary", proc.stdout + proc.stderr
    return records[-1]


def _spec(peer: Any) -> str:
    return f"{peer.aet}@127.0.0.1:{peer.dicom_port}"


def test_echo_orthanc_ok_and_stopped_peer_exits_4(orthanc: Any, archive_dir: Path) -> None:
    proc = run_cli("echo", _spec(orthanc))
    assert proc.returncode == 0 and "C-ECHO ok" in proc.stdout, proc.stderr
    spec = _spec(orthanc)
    orthanc.stop()
    down = run_cli("echo", spec, "--timeout", "5")
    assert down.returncode == 4 and "error:" in down.stderr


# Well-formed files in several transfer syntaxes (uncompressed, big endian, RLE, JPEG,
# JPEG 2000), and one that declares explicit VR but is implicit inside: Orthanc cannot parse
# it and drops the association, which must not sink the files after it.
_GOOD = ("CT_small.dcm", "MR_small.dcm", "ExplVR_BigEnd.dcm", "JPEG-lossy.dcm", "SC_rgb_rle.dcm",
         "JPEG2000.dcm", "examples_palette.dcm")
_CHOKES_ORTHANC = "SC_rgb_jpeg.dcm"


def test_send_pydicom_test_files_to_orthanc(orthanc_factory: Any, testdata_dir: Path,
                                            archive_dir: Path) -> None:
    """Every file reported sent is in Orthanc; the broken one is reported with a reason."""
    peer = orthanc_factory(config={"DicomScpTimeout": 2})  # drops the choking association soon
    good = [testdata_dir / name for name in _GOOD]
    files = good[:3] + [testdata_dir / _CHOKES_ORTHANC] + good[3:]
    proc = run_cli("send", _spec(peer), *files, "--json", "--timeout", "10")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    records = _json_lines(proc.stdout)
    summary = records[-1]
    assert (summary["files"], summary["sent"], summary["failed"]) == (len(files), len(good), 1), records
    assert summary["bytes"] == sum(p.stat().st_size for p in good)
    [failed] = records[:-1]
    assert failed["path"] == str(testdata_dir / _CHOKES_ORTHANC) and failed["reason"]
    assert peer.instance_uids() == {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in good}


def test_query_orthanc_study_level_wildcard_and_latin1(orthanc: Any, testdata_dir: Path,
                                                       ct_factory: Any, archive_dir: Path) -> None:
    latin1 = ct_factory(patient_id="LAT1", patient_name="Buc^Jérôme")  # ISO_IR 100 file
    for path in (testdata_dir / "CT_small.dcm", testdata_dir / "MR_small.dcm", latin1):
        orthanc.upload(path)
    proc = run_cli("query", _spec(orthanc), "-k", "PatientName=CompressedSamples*", "--json")
    assert proc.returncode == 0, proc.stderr
    records = _json_lines(proc.stdout)
    assert sorted(r["PatientID"] for r in records) == ["1CT1", "4MR1"]
    ct = next(r for r in records if r["PatientID"] == "1CT1")
    assert ct["StudyInstanceUID"] == str(pydicom.dcmread(testdata_dir / "CT_small.dcm").StudyInstanceUID)
    assert ct["ModalitiesInStudy"] == ["CT"] and ct["NumberOfStudyRelatedInstances"] == 1

    every = _json_lines(run_cli("query", _spec(orthanc), "--json").stdout)
    assert {r["PatientName"] for r in every} >= {"Buc^Jérôme", "CompressedSamples^CT1"}
    accented = run_cli("query", _spec(orthanc), "-k", "PatientName=Buc^Jé*", "--json")  # sent as UTF-8
    assert [r["PatientID"] for r in _json_lines(accented.stdout)] == ["LAT1"], accented.stderr
    images = run_cli("query", _spec(orthanc), "--level", "instance", "-k", "PatientID=LAT1", "--json")
    assert [r["SOPInstanceUID"] for r in _json_lines(images.stdout)] == [
        str(pydicom.dcmread(latin1).SOPInstanceUID)]
    series = run_cli("query", _spec(orthanc), "--level", "series", "-k", "Modality=MR", "--json")
    assert [r["PatientID"] for r in _json_lines(series.stdout)] == ["4MR1"]


def test_move_from_orthanc_to_storescp(orthanc_factory: Any, storescp: Any, ct_factory: Any,
                                       archive_dir: Path) -> None:
    peer = orthanc_factory(modalities={"dest": [storescp.aet, "127.0.0.1", storescp.port]})
    study = generate_uid()
    for path in ct_factory.series(3, study_uid=study, patient_id="MOVE1") + [ct_factory(patient_id="STAY")]:
        peer.upload(path)
    proc = run_cli("move", _spec(peer), "--to", storescp.aet, "-k", "PatientID=MOVE1", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = _summary(proc)
    assert (summary["matched"], summary["completed"], summary["failed"]) == (1, 3, 0)
    received = storescp.files()
    assert len(received) == 3
    assert {str(pydicom.dcmread(f).StudyInstanceUID) for f in received} == {study}

    unknown = run_cli("move", _spec(peer), "--to", "NOWHERE", "-k", "PatientID=MOVE1")
    assert unknown.returncode == 4 and "error:" in unknown.stderr  # Orthanc answers 0xC000


def test_get_from_orthanc_into_archive_then_ls(orthanc: Any, ct_factory: Any, testdata_dir: Path,
                                               archive_dir: Path) -> None:
    study = generate_uid()
    files = ct_factory.series(4, study_uid=study, patient_id="GET1")
    for path in files + [testdata_dir / "MR_small.dcm"]:
        orthanc.upload(path)
    proc = run_cli("get", _spec(orthanc), "-k", "PatientID=GET1", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = _summary(proc)
    assert (summary["completed"], summary["received"], summary["stored"], summary["missing"]) == (4, 4, 4, 0)
    listed = _json_lines(run_cli("ls", "--level", "instance", "--json").stdout)
    assert {r["SOPInstanceUID"] for r in listed} == {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}


def test_move_from_orthanc_into_own_archive(orthanc_factory: Any, ct_factory: Any,
                                            archive_dir: Path) -> None:
    """A migration: --to our own AE title, pacsctl listens itself and counts arrivals."""
    port = free_port()
    for key, value in (("ae_title", "MIGRATE"), ("port", str(port)), ("host", "127.0.0.1")):
        assert run_cli("config", "set", key, value).returncode == 0
    peer = orthanc_factory(modalities={"pacsctl": ["MIGRATE", "127.0.0.1", port]})
    first, second = generate_uid(), generate_uid()
    for path in (ct_factory.series(2, study_uid=first, patient_id="OLD", study_date="20200101")
                 + ct_factory.series(3, study_uid=second, patient_id="OLD", study_date="20210101")):
        peer.upload(path)
    proc = run_cli("move", _spec(peer), "--to", "MIGRATE", "-k", "PatientID=OLD", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["matched"], summary["expected"], summary["completed"]) == (2, 5, 5)
    assert (summary["received"], summary["stored"], summary["missing"]) == (5, 5, 0)
    listed = _json_lines(run_cli("ls", "--json").stdout)
    assert sorted((r["StudyInstanceUID"], r["NumberOfStudyRelatedInstances"]) for r in listed) == sorted(
        [(first, 2), (second, 3)])


def test_move_into_own_archive_waits_for_an_asynchronous_peer(orthanc_factory: Any, ct_factory: Any,
                                                              archive_dir: Path) -> None:
    """Orthanc without SynchronousCMove answers Success before its C-STOREs are done: the
    arrivals are awaited and counted, not taken from the final status."""
    port = free_port()
    for key, value in (("ae_title", "MIGRATE"), ("port", str(port)), ("host", "127.0.0.1")):
        assert run_cli("config", "set", key, value).returncode == 0
    peer = orthanc_factory(modalities={"pacsctl": ["MIGRATE", "127.0.0.1", port]},
                           config={"SynchronousCMove": False})
    study = generate_uid()
    for path in ct_factory.series(6, study_uid=study, patient_id="ASYNC"):
        peer.upload(path)
    proc = run_cli("move", _spec(peer), "--to", "MIGRATE", "-k", f"StudyInstanceUID={study}", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["expected"], summary["received"], summary["stored"], summary["missing"]) == (6, 6, 6, 0), summary
    listed = _json_lines(run_cli("ls", "--json").stdout)
    assert [(r["StudyInstanceUID"], r["NumberOfStudyRelatedInstances"]) for r in listed] == [(study, 6)]


def test_get_keeps_compressed_instances_as_orthanc_holds_them(orthanc: Any, testdata_dir: Path,
                                                              archive_dir: Path) -> None:
    """Orthanc cannot transcode JPEG 2000: offered a context in the stored syntax, it sends the
    instance as it is, and the archive keeps that syntax."""
    j2k = testdata_dir / "JPEG2000.dcm"
    orthanc.upload(j2k)
    ds = pydicom.dcmread(j2k, stop_before_pixels=True)
    proc = run_cli("get", _spec(orthanc), "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (_summary(proc)["stored"], _summary(proc)["expected"]) == (1, 1)
    [listed] = _json_lines(run_cli("ls", "--level", "instance", "--json").stdout)
    assert listed["TransferSyntaxUID"] == str(ds.file_meta.TransferSyntaxUID)


def test_get_of_an_instance_archived_with_another_data_set_is_a_conflict(
        orthanc: Any, testdata_dir: Path, archive_dir: Path) -> None:
    """Imported from the file, then retrieved from Orthanc (which rewrites a few elements of
    the data set): the archived copy stays, the received one is quarantined, and the summary
    says so with exit 3, as `import` does for a conflict."""
    source = testdata_dir / "CT_small.dcm"
    assert run_cli("import", source).returncode == 0
    orthanc.upload(source)
    proc = run_cli("get", _spec(orthanc), "-k", "PatientID=1CT1", "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["received"], summary["stored"], summary["duplicates"], summary["conflicts"]) == (1, 0, 0, 1)
    assert "conflict: same SOP Instance UID, different bytes in the data set" in proc.stderr


def test_send_odd_length_deflated_file_to_orthanc(orthanc_factory: Any, testdata_dir: Path,
                                                  archive_dir: Path) -> None:
    """pydicom's image_dfl.dcm holds an odd-length deflated data set; sent as stored, Orthanc
    refuses the odd fragment and the association hangs. It must arrive, re-encoded and padded."""
    peer = orthanc_factory(config={"DicomScpTimeout": 2})
    path = testdata_dir / "image_dfl.dcm"
    proc = run_cli("send", _spec(peer), str(path), "--json", "--timeout", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _json_lines(proc.stdout)[-1]["sent"] == 1
    assert peer.instance_uids() == {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)}
