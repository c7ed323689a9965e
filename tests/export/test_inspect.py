"""`show` (what the archive and its audit log know about a study) and `dump` (an instance's
header as text or as the DICOM JSON model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from pacsctl.archive.archive import Archive
from tests.helpers import TESTDATA_DIR, invoke_cli


def _root(archive: Archive) -> str:
    return str(archive.root)


def _p1(archive: Archive) -> list[dict]:
    return [r for r in archive.index.instances() if r.get("PatientID") == "P1"]


def test_show_a_study_by_any_of_its_uids(archive: Archive) -> None:
    records = _p1(archive)
    study = records[0]["StudyInstanceUID"]
    for uid in (study, records[0]["SeriesInstanceUID"], records[2]["SOPInstanceUID"]):
        result = invoke_cli("--archive", _root(archive), "show", uid, "--json")
        assert result.returncode == 0, result.stderr
        [view] = [json.loads(line) for line in result.stdout.splitlines()]
        assert view["StudyInstanceUID"] == study and view["PatientID"] == "P1"
        assert view["instances"] == 4 and view["bytes"] == sum(r["size"] for r in records)
        [series] = view["series"]
        assert series["instances"] == 4 and sorted(series["paths"]) == sorted(r["path"] for r in records)
        assert view["first_arrival"] <= view["last_arrival"] and view["last_backup"] is None


def test_show_text_and_patient_and_unknown_uid(archive: Archive) -> None:
    result = invoke_cli("--archive", _root(archive), "show", "--patient", "P2")
    assert result.returncode == 0, result.stderr
    assert "1 series, 2 instances" in result.stdout and "ID P2" in result.stdout
    missing = invoke_cli("--archive", _root(archive), "show", "1.2.3.4.5.6.7")
    assert missing.returncode == 2 and "1.2.3.4.5.6.7" in missing.stderr
    nobody = invoke_cli("--archive", _root(archive), "show", "--patient", "SECRET-ID")
    assert nobody.returncode == 2 and "SECRET-ID" not in nobody.stderr  # an ID is patient data


def test_show_names_the_sender_and_the_last_backup_and_verify_from_the_audit_log(
    archive_dir: Path, tmp_path: Path, ct_factory, serve_factory
) -> None:
    server = serve_factory(archive_dir)
    path = ct_factory(patient_id="SENT")
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.aet)
    assert assoc.is_established
    assert assoc.send_c_store(dcmread(path)).Status == 0
    assoc.release()
    server.stop()
    study = dcmread(path).StudyInstanceUID
    before = json.loads(invoke_cli("--archive", str(archive_dir), "show", study, "--json").stdout)
    assert before["senders"] == {"MODALITY1": 1} and before["last_backup"] is None
    assert invoke_cli("--archive", str(archive_dir), "backup", str(tmp_path / "nas")).returncode == 0
    after = json.loads(invoke_cli("--archive", str(archive_dir), "show", study, "--json").stdout)
    assert after["last_backup"]["covers"] is True and after["last_backup"]["dest"] == str(tmp_path / "nas")
    assert after["last_verify"] is None
    assert invoke_cli("--archive", str(archive_dir), "verify").returncode == 0
    verified = json.loads(invoke_cli("--archive", str(archive_dir), "show", study, "--json").stdout)
    assert verified["last_verify"]["covers"] is True and verified["last_verify"]["mode"] == "full"
    assert verified["last_verify"]["status"] == "ok"
    text = invoke_cli("--archive", str(archive_dir), "show", study).stdout
    assert "MODALITY1 (1)" in text and text.count("after the last arrival") == 2


def test_dump_text_is_dcmdump_like(archive: Archive) -> None:
    result = invoke_cli("dump", str(TESTDATA_DIR / "rtplan.dcm"), "--width", "20")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# File Meta Information")
    assert any(line.startswith("(0008,0016) UI SOPClassUID") for line in lines)
    assert any(line.startswith("  (300A,0012) IS DoseReferenceNumber") for line in lines)  # in a sequence
    assert all(len(line.split("  ")[-1].strip()) <= 20 or "item" in line for line in lines if line.startswith("("))
    ct = invoke_cli("dump", str(TESTDATA_DIR / "CT_small.dcm")).stdout
    assert "(7FE0,0010) OW PixelData" in ct and "<32768 bytes, 128x128, 1 frame(s)" in ct


def test_dump_by_uid_as_dicom_json_with_bulk_data_by_reference(archive: Archive) -> None:
    record = _p1(archive)[0]
    result = invoke_cli("--archive", _root(archive), "dump", record["SOPInstanceUID"], "--json")
    assert result.returncode == 0, result.stderr
    [model] = [json.loads(line) for line in result.stdout.splitlines()]
    assert model["00080018"] == {"vr": "UI", "Value": [record["SOPInstanceUID"]]}
    pixel = model["7FE00010"]
    assert pixel["vr"] in ("OW", "OB") and "InlineBinary" not in pixel
    assert pixel["BulkDataURI"] == archive.path_of(record["path"]).resolve().as_uri() + "#7FE00010"
    # the model reads back: pydicom turns it into the same data set (pixel data aside)
    again = Dataset.from_json(model, bulk_data_uri_handler=lambda *a: b"")
    assert again.PatientID == "P1" and again.SOPInstanceUID == record["SOPInstanceUID"]


def test_dump_unknown_is_a_usage_error(archive: Archive, tmp_path: Path) -> None:
    assert invoke_cli("--archive", _root(archive), "dump", "1.2.3.999").returncode == 2
    junk = tmp_path / "junk.txt"
    junk.write_text("not dicom")
    result = invoke_cli("--archive", _root(archive), "dump", str(junk))
    assert result.returncode == 1 and "not a readable DICOM file" in result.stderr


@pytest.mark.interop
def test_dump_json_matches_dcm2json_on_the_values(archive: Archive) -> None:
    from tests.helpers import run_dcmtk

    path = TESTDATA_DIR / "CT_small.dcm"
    ours = json.loads(invoke_cli("dump", str(path), "--json").stdout)
    theirs = json.loads(run_dcmtk("dcm2json", str(path)).stdout)
    def values(attribute: dict) -> list:
        if attribute["vr"] == "PN":
            return [v["Alphabetic"] for v in attribute["Value"]]
        if attribute["vr"] in ("DS", "IS"):
            return [float(v) for v in attribute["Value"]]
        return attribute["Value"]

    for tag in ("00100010", "00080018", "00200013", "00280030", "00080060", "00280100"):
        assert ours[tag]["vr"] == theirs[tag]["vr"]
        assert values(ours[tag]) == values(theirs[tag])


def test_an_instance_uid_is_found_without_a_walk_over_every_record(archive: Archive, monkeypatch) -> None:
    """`show` and `dump` by instance UID read the instance's own file and its study's records,
    never every instance record of the archive (slow at millions)."""
    from pacsctl.storage.index import Index

    real = Index.instances

    def scoped(self, patient_ids=None, study_uids=None, series_uids=None):
        assert patient_ids or study_uids or series_uids, "a walk over every instance record"
        return real(self, patient_ids, study_uids, series_uids)

    every = archive.index.instances()
    monkeypatch.setattr(Index, "instances", scoped)
    compressed = [r for r in every if r.get("TransferSyntaxUID", "").startswith("1.2.840.10008.1.2.4")]
    for record in [every[0], *compressed[:1]]:  # a plain file (scanned) and a compressed one (pydicom)
        assert archive.instance_record(record["SOPInstanceUID"]) == record
        shown = invoke_cli("--archive", _root(archive), "show", record["SOPInstanceUID"], "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["StudyInstanceUID"] == record["StudyInstanceUID"]
        dumped = invoke_cli("--archive", _root(archive), "dump", record["SOPInstanceUID"])
        assert dumped.returncode == 0 and record["SOPInstanceUID"] in dumped.stdout, dumped.stderr
    assert compressed, "the archive fixture holds a compressed instance"
    assert archive.instance_record("1.2.3.4.5.6.7") is None
