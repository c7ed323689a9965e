"""The shared test helpers do what other tests rely on."""

from __future__ import annotations

import socket
import warnings

import pydicom
import pytest

from tests.helpers import KNOWN_BROKEN, free_port, require_tool


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_require_tool_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_tool("/nonexistent/tool")
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception):
        require_tool("no-such-tool-pacsctl")


def test_require_tool_prefers_dcmtk_over_venv_namesakes() -> None:
    assert require_tool("sh").startswith("/")
    # pynetdicom puts its own `storescu` on the venv PATH; a bare name must find DCMTK's.
    try:
        path = require_tool("storescu")
    except pytest.skip.Exception:
        return
    assert path == "/usr/bin/storescu"


def test_dicom_test_files_are_valid_and_unique(dicom_test_files, broken_dicom_files) -> None:
    assert len(dicom_test_files) > 30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SC_rgb_jpeg.dcm declares the wrong VR encoding
        uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                for p in dicom_test_files]
    assert len(set(uids)) == len(uids)
    names = {p.name for p in dicom_test_files}
    assert not names & set(KNOWN_BROKEN)
    assert "DICOMDIR" not in names and "no_meta.dcm" not in names
    assert {p.name for p in broken_dicom_files} == set(KNOWN_BROKEN)


def test_ct_factory_writes_valid_ct(ct_factory) -> None:
    path = ct_factory(patient_id="P1", sop_uid="1.2.3.4", rows=32, cols=16)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (ds.PatientID, ds.SOPInstanceUID, ds.Rows, ds.Columns) == ("P1", "1.2.3.4", 32, 16)
    assert ds.pixel_array.shape == (32, 16)
    series = ct_factory.series(3, patient_id="P2")
    headers = [pydicom.dcmread(p) for p in series]
    assert len({h.SeriesInstanceUID for h in headers}) == 1
    assert [h.InstanceNumber for h in headers] == [1, 2, 3]


def test_archive_dir_is_exported(archive_dir, monkeypatch) -> None:
    import os

    assert os.environ["PACSCTL_ARCHIVE"] == str(archive_dir)
    assert not archive_dir.exists()


def test_run_cli_runs_the_package(cli) -> None:
    proc = cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_serve_factory_starts_a_node_that_answers_echo(serve_factory, archive_dir) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    server = serve_factory(archive_dir, "--workers", "1")
    ae = AE(ae_title="FIXTURE")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=server.aet)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert server.stop() == 0
