"""The peers the interop suite relies on really work: Orthanc answers DCMTK, storescp stores."""

from __future__ import annotations

import pydicom
import pytest

from tests.helpers import run_dcmtk

pytestmark = pytest.mark.interop


def test_dcmtk_echoscu_to_orthanc(orthanc) -> None:
    """DCMTK echoscu gets a C-ECHO Success from the Orthanc fixture; REST is up and empty."""
    proc = run_dcmtk("echoscu", "-aet", "SMOKE", "-aec", orthanc.aet, "127.0.0.1",
                     str(orthanc.dicom_port))
    assert proc.returncode == 0
    assert orthanc.rest("/system")["DicomAet"] == "ORTHANC"
    assert orthanc.instance_count() == 0


def test_orthanc_stores_and_registers_modality(orthanc_factory, free_port, testdata_dir) -> None:
    """Modalities given at start are registered; a DCMTK C-STORE lands in Orthanc."""
    peer = orthanc_factory(modalities={"PACSCTL": ["PACSCTL", "127.0.0.1", free_port]})
    assert "PACSCTL" in peer.rest("/modalities")
    source = testdata_dir / "CT_small.dcm"
    run_dcmtk("storescu", "-aet", "SMOKE", "-aec", peer.aet, "127.0.0.1",
              str(peer.dicom_port), str(source))
    assert peer.instance_uids() == {pydicom.dcmread(source).SOPInstanceUID}


def test_dcmtk_storescu_into_storescp(storescp, testdata_dir) -> None:
    """DCMTK storescu sends a pydicom test file; storescp writes it with the same UID."""
    port, out_dir = storescp
    source = testdata_dir / "MR_small.dcm"
    run_dcmtk("storescu", "-aet", "SMOKE", "-aec", storescp.aet, "127.0.0.1", str(port),
              str(source))
    received = storescp.files()
    assert len(received) == 1 and received[0].parent == out_dir
    assert pydicom.dcmread(received[0]).SOPInstanceUID == pydicom.dcmread(source).SOPInstanceUID
