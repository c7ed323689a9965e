"""Routes to real peers: DCMTK storescp, and an Orthanc (with its DICOMweb plugin) that is down
when the instances arrive and comes up later: all arrive, each delivered once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pacsctl.archive.archive import Archive
from pacsctl.config import Config, parse_node_spec
from pacsctl.remote.send import SendItem, send
from pacsctl.routing.forwarder import run_once
from pacsctl.routing.routes import add_route, route_status
from tests.helpers import invoke_cli

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_route_to_dcmtk_storescp(archive_dir, ct_factory, storescp):
    files = ct_factory.series(4)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dcmtk", f"{storescp.aet}@127.0.0.1:{storescp.port}")
    assert invoke_cli("--archive", archive_dir, "import", *files, "--jobs", "1").returncode == 0
    assert run_once(archive_dir)[0].delivered == 4
    assert len(storescp.files()) == 4
    assert {p.read_bytes()[-4096:] for p in storescp.files()} == {p.read_bytes()[-4096:] for p in files}


def test_orthanc_down_at_first_gets_everything_once_it_is_up(
    archive_dir: Path, ct_factory, orthanc_factory, serve_factory
):
    orthanc = orthanc_factory(config={"Plugins": [DICOMWEB_PLUGIN],
                                      "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}})
    orthanc.stop()  # down; its ports are kept for when it comes back
    by_dicom = ct_factory.series(12, series_number=1)
    by_web = ct_factory.series(8, series_number=2)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dimse", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}", {"SeriesNumber": "1"},
                  max_backoff=1.0)
        add_route(archive, "web", f"http://127.0.0.1:{orthanc.http_port}/dicom-web",
                  {"SeriesNumber": "2"}, max_backoff=1.0)
    server = serve_factory(archive_dir)
    node = parse_node_spec(f"{server.aet}@127.0.0.1:{server.port}", Config())
    summary = send(node, [SendItem(str(p), p.stat().st_size) for p in by_dicom + by_web], "MODALITY")
    assert summary.sent == 20

    def status() -> dict[str, dict]:
        with Archive.open(archive_dir) as archive:
            return {row["name"]: row for row in route_status(archive)[0]}

    _wait_for(lambda: all(row["down"] for row in status().values()))  # tried, and failed
    rows = status()
    assert (rows["dimse"]["pending"], rows["web"]["pending"]) == (12, 8)
    assert rows["dimse"]["dead"] == rows["web"]["dead"] == 0

    orthanc.start(keep_ports=True)
    _wait_for(lambda: orthanc.instance_count() >= 20)
    _wait_for(lambda: all(row["delivered"] for row in status().values()))
    time.sleep(1.5)  # a forward sent twice would show by now
    assert server.stop() == 0
    rows = status()
    assert (rows["dimse"]["delivered"], rows["web"]["delivered"]) == (12, 8)
    assert rows["dimse"]["pending"] == rows["web"]["pending"] == 0
    assert orthanc.instance_count() == 20
    new_instances = [c for c in orthanc.rest("/changes?limit=1000")["Changes"]
                     if c["ChangeType"] == "NewInstance"]
    assert len(new_instances) == 20
    by_series = {s["MainDicomTags"]["SeriesNumber"]: len(s["Instances"])
                 for s in orthanc.rest("/series?expand")}
    assert by_series == {"1": 12, "2": 8}  # each series came by its own route


def test_route_to_orthanc_dicomweb_with_basic_auth(archive_dir: Path, ct_factory, orthanc_factory, tmp_path):
    """Orthanc with `AuthenticationEnabled` and a registered user: a wrong password holds the
    queue (HTTP 401, nothing sent, no dead letters, the password nowhere in the output); the
    right one, written into the same file, delivers each instance once."""
    orthanc = orthanc_factory(config={"Plugins": [DICOMWEB_PLUGIN],
                                      "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                                      "AuthenticationEnabled": True,
                                      "RegisteredUsers": {"alice": "right-pa55word"}})
    password = tmp_path / "password"
    password.write_text("wrong-pa55word\n")
    password.chmod(0o600)
    files = ct_factory.series(5)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "orthanc", f"http://127.0.0.1:{orthanc.http_port}/dicom-web",
                  user="alice", password_file=password)
    assert invoke_cli("--archive", archive_dir, "import", *files, "--jobs", "1").returncode == 0

    held = invoke_cli("--archive", archive_dir, "-v", "route", "run", "--once", "--json")
    assert held.returncode == 4, held.stderr
    assert "authentication refused (HTTP 401)" in held.stderr
    status = invoke_cli("--archive", archive_dir, "route", "status", "--json")
    listed = invoke_cli("--archive", archive_dir, "route", "list", "--json")
    row = [json.loads(line) for line in status.stdout.splitlines()][0]
    assert (row["pending"], row["dead"], row["down_cause"]) == (5, 0, "auth")
    assert [json.loads(line)["auth"] for line in listed.stdout.splitlines()] == ["basic"]
    for text in (held.stdout, held.stderr, status.stdout, listed.stdout):
        assert "pa55word" not in text
    assert orthanc.instance_count() == 0

    password.write_text("right-pa55word\n")  # fixed in place: no `route add` again
    [report] = run_once(archive_dir)
    assert (report.delivered, report.pending, report.dead, report.down) == (5, 0, 0, "")
    assert orthanc.instance_count() == 5
    new_instances = [c for c in orthanc.rest("/changes?limit=1000")["Changes"]
                     if c["ChangeType"] == "NewInstance"]
    assert len(new_instances) == 5
    with Archive.open(archive_dir) as archive:
        assert route_status(archive)[0][0]["delivered"] == 5
