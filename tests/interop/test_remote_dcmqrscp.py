"""`pacsctl query/get/move` against DCMTK's dcmqrscp, a stricter and sparser Q/R SCP than
Orthanc: it returns no SOPClassUID nor counts, so `get` falls back to its default contexts
and records keep empty values where `ls` would have numbers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from benchmarks.peers import PeerError, wait_for_port
from tests.helpers import dcmtk, dcmtk_env, free_port, run_cli, run_dcmtk

pytestmark = pytest.mark.interop


@pytest.fixture
def dcmqrscp(tmp_path: Path, storescp: Any) -> Iterator[tuple[str, Any]]:
    """A running dcmqrscp (AE QR) with C-MOVE destination DEST = the storescp fixture."""
    binary = dcmtk("dcmqrscp")
    db = tmp_path / "qrdb"
    db.mkdir()
    port = free_port()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        f"HostTable BEGIN\ndest = ({storescp.aet}, 127.0.0.1, {storescp.port})\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQR {db} RW (200, 1024mb) ANY\nAETable END\n")
    proc = subprocess.Popen([binary, "-c", str(config)], env=dcmtk_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 15, proc)
    except PeerError as exc:
        proc.kill()
        pytest.fail(str(exc))
    try:
        yield f"QR@127.0.0.1:{port}", storescp
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_query_get_move_with_dcmqrscp(dcmqrscp: tuple[str, Any], testdata_dir: Path,
                                      archive_dir: Path) -> None:
    spec, storescp = dcmqrscp
    port = spec.rsplit(":", 1)[1]
    files = [testdata_dir / "CT_small.dcm", testdata_dir / "MR_small.dcm"]
    run_dcmtk("storescu", "-aec", "QR", "127.0.0.1", port, *map(str, files))

    studies = _json_lines(run_cli("query", spec, "-k", "PatientName=Compressed*", "--json").stdout)
    assert sorted(r["PatientID"] for r in studies) == ["1CT1", "4MR1"]
    images = _json_lines(run_cli("query", spec, "--level", "instance", "-k", "PatientID=4MR1",
                                 "--json").stdout)
    assert [r["SOPInstanceUID"] for r in images] == [str(pydicom.dcmread(files[1]).SOPInstanceUID)]

    got = run_cli("get", spec, "-k", "PatientID=1CT1", "--json")
    assert got.returncode == 0, got.stdout + got.stderr
    summary = _json_lines(got.stdout)[-1]
    assert (summary["expected"], summary["received"], summary["stored"]) == (1, 1, 1)
    listed = _json_lines(run_cli("ls", "--json").stdout)
    assert [r["PatientID"] for r in listed] == ["1CT1"]

    moved = run_cli("move", spec, "--to", storescp.aet, "--level", "series", "-k", "Modality=MR", "--json")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert _json_lines(moved.stdout)[-1]["completed"] == 1
    assert [pydicom.dcmread(f).PatientID for f in storescp.files()] == ["4MR1"]
