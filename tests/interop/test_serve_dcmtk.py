"""`pacsctl serve` driven by real DCMTK tools: echoscu, storescu, dcmsend, findscu, movescu,
getscu (plain and TLS), a SIGKILL in the middle of a transfer, and malformed PDUs."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom.dsutils import split_dataset

from pacsctl.config import Node
from pacsctl.archive.archive import Archive
from pacsctl.net import scu
from tests.helpers import TESTDATA_DIR, dcmtk, dcmtk_env, run_cli, run_dcmtk

pytestmark = pytest.mark.interop


# Transfer syntax -> the storescu option that proposes it first.
_STORESCU_FLAG = {
    "1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
}


def _storable(paths: list[Path]) -> list[Path]:
    """Test files the archive can index (it needs Study and Series Instance UIDs) and DCMTK
    can read (a few of pydicom's files are deliberately odd)."""
    out = []
    for p in paths:
        if subprocess.run([dcmtk("dcmdump"), "-q", str(p)], capture_output=True,
                          env=dcmtk_env()).returncode != 0:
            continue
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if ds.get("StudyInstanceUID") and ds.get("SeriesInstanceUID") and ds.get("SOPInstanceUID"):
            if ds.SOPInstanceUID == ds.file_meta.get("MediaStorageSOPInstanceUID"):
                out.append(p)
    return out


def _archived(archive: Path) -> dict[str, dict]:
    """SOPInstanceUID -> index record, read through the archive API."""
    with Archive.open(archive, create=False) as arch:
        return {r["SOPInstanceUID"]: r for r in arch.index.instances()}


def _dataset_bytes(path: Path) -> bytes:
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def _node(srv) -> Node:
    return Node("srv", srv.aet, "127.0.0.1", srv.port)


@pytest.fixture
def served(serve_factory, archive_dir):
    return serve_factory(archive_dir, "--workers", "2")


def test_echoscu(served):
    run_dcmtk("echoscu", "-aec", served.aet, "127.0.0.1", str(served.port))


def test_storescu_stores_every_syntax_as_received(served, dicom_test_files):
    files = _storable(dicom_test_files)
    # storescu proposes one compressed syntax per run (its -x.. flag): one run per syntax.
    by_syntax: dict[str, list[Path]] = {}
    for path in files:
        ts = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        if ts in _STORESCU_FLAG:
            by_syntax.setdefault(ts, []).append(path)
    files = [p for group in by_syntax.values() for p in group]
    for ts, group in by_syntax.items():
        run_dcmtk("storescu", "-R", _STORESCU_FLAG[ts], "-aec", served.aet, "127.0.0.1",
                  str(served.port), *map(str, group), timeout=120)
    held = _archived(served.archive)
    compressed_kept = 0
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rec = held[str(ds.SOPInstanceUID)]
        if rec["TransferSyntaxUID"] == str(ds.file_meta.TransferSyntaxUID):
            # Stored as received, not transcoded: the (compressed) pixel bytes are the file's.
            # (storescu re-encodes the rest of the header itself, so whole-file bytes differ;
            # tests/net proves byte-for-byte storage with a sender that sends file bytes.)
            archived = pydicom.dcmread(served.archive / rec["path"])
            original = pydicom.dcmread(path)
            if "PixelData" in original:
                assert archived.PixelData == original.PixelData, path.name
            compressed_kept += pydicom.uid.UID(rec["TransferSyntaxUID"]).is_compressed
    assert len(held) == len(files)
    assert compressed_kept >= 5  # JPEG, JPEG-LS, J2K, RLE... went in compressed


def test_dcmsend(served):
    files = [TESTDATA_DIR / "CT_small.dcm", TESTDATA_DIR / "MR_small_RLE.dcm"]
    run_dcmtk("dcmsend", "--call", served.aet, "127.0.0.1", str(served.port), *map(str, files))
    assert len(_archived(served.archive)) == 2


@pytest.fixture
def study(served, ct_factory):
    """Two series of one study (CT, 3 + 2 instances) and one other patient, stored."""
    study_uid = pydicom.uid.generate_uid()
    files = ct_factory.series(3, patient_id="PID1", patient_name="Doe^John",
                              study_uid=study_uid, study_date="20240315")
    files += ct_factory.series(2, patient_id="PID1", patient_name="Doe^John",
                               study_uid=study_uid, study_date="20240315", series_number=2)
    files += ct_factory.series(1, patient_id="PID2", patient_name="Roe^Jane",
                               study_date="20230101")
    assert all(r.ok for r in scu.store(_node(served), files))
    return study_uid


def _findscu(srv, tmp_path: Path, *keys: str) -> list[pydicom.Dataset]:
    out = tmp_path / f"find-{time.monotonic_ns()}"
    out.mkdir()
    args = ["-S", "-aec", srv.aet, "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    run_dcmtk("findscu", *args, "127.0.0.1", str(srv.port))
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_findscu_levels_wildcards_ranges(served, study, tmp_path):
    studies = _findscu(served, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=Doe*",
                       "StudyInstanceUID", "NumberOfStudyRelatedInstances",
                       "ModalitiesInStudy")
    assert [s.StudyInstanceUID for s in studies] == [study]
    assert int(studies[0].NumberOfStudyRelatedInstances) == 5
    assert studies[0].ModalitiesInStudy == "CT"
    in_range = _findscu(served, tmp_path, "QueryRetrieveLevel=STUDY",
                        "StudyDate=20240101-20241231", "StudyInstanceUID")
    assert [s.StudyInstanceUID for s in in_range] == [study]
    both = _findscu(served, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=?oe^*",
                    "StudyInstanceUID")
    assert len(both) == 2
    series = _findscu(served, tmp_path, "QueryRetrieveLevel=SERIES",
                      f"StudyInstanceUID={study}", "SeriesInstanceUID")
    assert len(series) == 2
    images = _findscu(served, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}",
                      f"SeriesInstanceUID={series[0].SeriesInstanceUID}", "SOPInstanceUID")
    assert len(images) in (2, 3)
    patients = _findscu(served, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=PID1",
                        "PatientName")
    assert [str(p.PatientName) for p in patients] == ["Doe^John"]


def test_movescu_to_dcmtk_storescp(served, study, storescp, tmp_path):
    added = run_cli("--archive", served.archive, "nodes", "add", "DEST", "--aet", storescp.aet,
                    "--host", "127.0.0.1", "--port", str(storescp.port))
    assert added.returncode == 0, added.stderr
    run_dcmtk("movescu", "-S", "-aec", served.aet, "-aem", storescp.aet,
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
              "127.0.0.1", str(served.port), timeout=120)
    arrived = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
               for p in storescp.files()}
    expected = {uid for uid, r in _archived(served.archive).items()
                if r["StudyInstanceUID"] == study}
    assert arrived == expected and len(arrived) == 5


def test_movescu_unknown_destination(served, study):
    proc = run_dcmtk("movescu", "-v", "-S", "-aec", served.aet, "-aem", "NOWHERE",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                     "127.0.0.1", str(served.port), check=False)
    assert "movedestinationunknown" in (proc.stdout + proc.stderr).lower()


def test_getscu(served, study, tmp_path):
    out = tmp_path / "got"
    out.mkdir()
    run_dcmtk("getscu", "-S", "-aec", served.aet, "-od", str(out),
              "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
              "127.0.0.1", str(served.port), timeout=120)
    assert len(list(out.iterdir())) == 5


def test_allow_list_rejects_other_callers(serve_factory, archive_dir):
    srv = serve_factory(archive_dir, "--allow", "GOODSCU", "--workers", "1")
    bad = run_dcmtk("echoscu", "-aet", "BADSCU", "-aec", srv.aet, "127.0.0.1", str(srv.port),
                    check=False)
    assert bad.returncode != 0
    run_dcmtk("echoscu", "-aet", "GOODSCU", "-aec", srv.aet, "127.0.0.1", str(srv.port))
    audit = run_cli("--archive", archive_dir, "audit", "--json", "--event", "reject")
    assert "BADSCU" in audit.stdout


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem")
    return {n: str(d / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                    "client.key")}


def test_tls_echoscu_storescu(serve_factory, archive_dir, tls_files):
    t = tls_files
    srv = serve_factory(archive_dir, "--tls-cert", t["server.pem"], "--tls-key",
                        t["server.key"], "--tls-ca", t["ca.pem"])
    tls_args = ["+tls", t["client.key"], t["client.pem"], "+cf", t["ca.pem"]]
    run_dcmtk("echoscu", *tls_args, "-aec", srv.aet, "127.0.0.1", str(srv.port))
    run_dcmtk("storescu", *tls_args, "-aec", srv.aet, "127.0.0.1", str(srv.port),
              str(TESTDATA_DIR / "CT_small.dcm"))
    assert len(_archived(archive_dir)) == 1
    plain = run_dcmtk("echoscu", "-aec", srv.aet, "127.0.0.1", str(srv.port), check=False,
                      timeout=60)
    assert plain.returncode != 0  # a TLS listener refuses plain TCP


def test_malformed_pdus_do_not_wedge_the_node(serve_factory, archive_dir):
    srv = serve_factory(archive_dir, "--acse-timeout", "2", "--network-timeout", "2")
    payloads = [b"GET / HTTP/1.0\r\n\r\n", b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 64,
                b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00", bytes(range(256)) * 64, b""]
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    try:
        for payload in payloads:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                sock.sendall(payload)
        run_dcmtk("echoscu", "-aec", srv.aet, "127.0.0.1", str(srv.port))
    finally:
        for sock in idle:
            sock.close()
    assert srv.stop() == 0


def test_sigkill_mid_transfer_loses_nothing_acknowledged(serve_factory, archive_dir, ct_factory):
    files = ct_factory.series(120, patient_id="KILL", rows=256, cols=256)
    srv = serve_factory(archive_dir)
    acked: list[str] = []

    def on_result(res) -> None:
        if res.ok:
            acked.append(res.sop_instance_uid)
        if len(acked) == 40:
            srv.kill()  # power cut in the middle of the transfer

    def send() -> None:
        try:
            scu.store(_node(srv), files, progress=on_result, timeout=5)
        except Exception:
            pass  # the association dies with the node

    sender = threading.Thread(target=send)
    sender.start()
    sender.join(120)
    assert 40 <= len(acked) < len(files)
    # Restart: every acknowledged instance is there, intact and indexed.
    again = serve_factory(archive_dir)
    assert scu.echo(_node(again)) >= 0
    assert again.stop() == 0
    held = _archived(archive_dir)
    assert set(acked) <= set(held)
    verify = run_cli("--archive", archive_dir, "verify", "--json", timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_sigterm_finishes_in_flight_and_exits_0(serve_factory, archive_dir, ct_factory):
    files = ct_factory.series(60, patient_id="TERM", rows=128, cols=128)
    srv = serve_factory(archive_dir)
    results = []

    def send() -> None:
        try:
            results.extend(scu.store(_node(srv), files, timeout=10))
        except Exception:
            pass

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.5)
    assert srv.stop() == 0
    sender.join(60)
    acked = {r.sop_instance_uid for r in results if r.ok}
    assert acked <= set(_archived(archive_dir))
