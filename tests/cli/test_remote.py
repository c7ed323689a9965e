"""`pacsctl echo/send/query/move/get` against a real pacsctl node on loopback.

The peer is `pacsctl.node.service.serve` over its own archive (real pynetdicom associations,
real archive writes); the CLI runs in a subprocess with its own archive (`archive_dir`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from pacsctl.archive.archive import Archive
from pacsctl.archive.search import find_records
from pacsctl.dicom.matching import compile_filters
from pacsctl.node.service import RunningNode, serve
from pacsctl.net.types import ScpOptions
from tests.helpers import free_port, run_cli


@dataclass
class Peer:
    """A running pacsctl node: its archive, address and `AET@host:port` spec."""

    archive: Archive
    node: RunningNode
    aet: str

    @property
    def spec(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.node.port}"

    def instance_uids(self) -> set[str]:
        return {r["SOPInstanceUID"] for r in find_records(self.archive.index, "IMAGE", compile_filters({}))}

    def add_destination(self, name: str, aet: str, port: int) -> None:
        """A C-MOVE destination in the peer's known nodes (the server re-reads the config)."""
        from pacsctl.config import Node

        self.archive.config.nodes[name] = Node(name=name, aet=aet, host="127.0.0.1", port=port)
        self.archive.save_config()


@pytest.fixture
def peer_factory(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    """Start pacsctl nodes over fresh archives: ``peer_factory(files=[...], allow=[...])``."""
    started: list[Peer] = []

    def start(files: list[Path] = (), aet: str = "PEER", allow: list[str] | None = None,
              max_associations: int = 32) -> Peer:
        archive = Archive.open(tmp_path / f"peer{len(started)}")
        if files:
            archive.ingest([(Path(f).read_bytes(), str(f)) for f in files])
        options = ScpOptions(ae_title=aet, host="127.0.0.1", port=0, allow=allow or [],
                             max_associations=max_associations, temp_dir=archive.tmp_dir)
        peer = Peer(archive, serve(archive, options), aet)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.node.stop(graceful=False, timeout=10)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _summary(proc: Any) -> dict[str, Any]:
    records = _json_lines(proc.stdout)
    assert records and records[-1]["type"] == "summary", proc.stdout + proc.stderr
    return records[-1]


# -- echo -------------------------------------------------------------------------------------


def test_echo_ok_prints_round_trips(peer_factory: Callable[..., Peer], archive_dir: Path) -> None:
    peer = peer_factory()
    proc = run_cli("echo", peer.spec, "--count", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    records = _json_lines(proc.stdout)
    assert [r["ok"] for r in records[:2]] == [True, True]
    assert all(r["rtt_ms"] > 0 for r in records[:2])
    assert records[-1] == {**records[-1], "type": "summary", "sent": 2, "ok": 2, "failed": 0}
    human = run_cli("echo", peer.spec)
    assert human.returncode == 0 and "C-ECHO ok" in human.stdout


def test_echo_unreachable_exits_4(archive_dir: Path) -> None:
    proc = run_cli("echo", f"NOBODY@127.0.0.1:{free_port()}", "--timeout", "5")
    assert proc.returncode == 4
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_echo_rejected_calling_aet_exits_4(peer_factory: Callable[..., Peer], archive_dir: Path) -> None:
    peer = peer_factory(allow=["FRIEND"])
    assert run_cli("echo", peer.spec, "--aet", "STRANGER").returncode == 4
    assert run_cli("echo", peer.spec, "--aet", "FRIEND").returncode == 0


def test_echo_uses_archive_ae_title_and_named_nodes(peer_factory: Callable[..., Peer], archive_dir: Path) -> None:
    peer = peer_factory(allow=["MYARCHIVE"])
    assert run_cli("config", "set", "ae_title", "MYARCHIVE").returncode == 0
    assert run_cli("nodes", "add", "remote", "--aet", peer.aet, "--host", "127.0.0.1",
                   "--port", str(peer.node.port)).returncode == 0
    proc = run_cli("echo", "remote")
    assert proc.returncode == 0, proc.stderr


def test_unknown_node_is_a_usage_error(archive_dir: Path) -> None:
    proc = run_cli("echo", "nosuchnode")
    assert proc.returncode == 2 and "unknown node" in proc.stderr


# -- send -------------------------------------------------------------------------------------


def test_send_folder_recursive_skips_non_dicom(peer_factory: Callable[..., Peer], ct_factory: Any,
                                               tmp_path: Path, archive_dir: Path) -> None:
    peer = peer_factory()
    folder = tmp_path / "cd"
    files = ct_factory.series(3, directory=folder / "a" / "b") + [ct_factory(directory=folder)]
    (folder / "autorun.inf").write_text("[autorun]\n")
    proc = run_cli("send", peer.spec, folder, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["files"], summary["sent"], summary["failed"], summary["skipped"]) == (5, 4, 0, 1)
    assert summary["bytes"] == sum(f.stat().st_size for f in files)
    assert [r["status"] for r in _json_lines(proc.stdout)[:-1]] == ["skipped"]
    from pydicom import dcmread

    assert peer.instance_uids() == {str(dcmread(f).SOPInstanceUID) for f in files}


def test_send_over_parallel_associations_to_a_one_association_peer(
        peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:
    """-j 3 to a node that takes one association at a time: whatever it refuses goes over
    the association it accepted; every file arrives."""
    peer = peer_factory(max_associations=1)
    files = ct_factory.series(9)
    proc = run_cli("send", peer.spec, *files, "-j", "3", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (_summary(proc)["sent"], _summary(proc)["failed"]) == (9, 0)
    assert len(peer.instance_uids()) == 9


def test_send_partial_failure_exits_3(peer_factory: Callable[..., Peer], ct_factory: Any,
                                      tmp_path: Path, archive_dir: Path) -> None:
    peer = peer_factory()
    good = ct_factory()
    bad = tmp_path / "notes.txt"
    bad.write_text("not dicom")
    proc = run_cli("send", peer.spec, good, bad, tmp_path / "missing.dcm", "--json")
    assert proc.returncode == 3, proc.stderr
    records = _json_lines(proc.stdout)
    failed = {r["path"] for r in records if r.get("status") == "failed"}
    assert failed == {str(bad), str(tmp_path / "missing.dcm")}
    assert (records[-1]["sent"], records[-1]["failed"]) == (1, 2)
    assert len(peer.instance_uids()) == 1


def test_send_unreachable_exits_4(ct_factory: Any, archive_dir: Path) -> None:
    proc = run_cli("send", f"NOBODY@127.0.0.1:{free_port()}", ct_factory(), "--timeout", "5")
    assert proc.returncode == 4, proc.stderr


def test_send_study_from_archive(peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:
    study = generate_uid()
    wanted = ct_factory.series(2, study_uid=study, patient_id="P1")
    ct_factory.series(2, patient_id="P2")  # another study, not to be sent
    assert run_cli("import", ct_factory.directory).returncode == 0
    peer = peer_factory()
    proc = run_cli("send", peer.spec, "--study", study, "--json")
    assert proc.returncode == 0, proc.stderr
    assert _summary(proc)["sent"] == 2
    assert len(peer.instance_uids()) == len(wanted)
    by_key = run_cli("send", peer.spec, "-k", "PatientID=P2", "--json")
    assert _summary(by_key)["sent"] == 2 and len(peer.instance_uids()) == 4


def test_send_needs_something(archive_dir: Path) -> None:
    assert run_cli("send", "X@127.0.0.1:104").returncode == 2


# -- query ------------------------------------------------------------------------------------


def test_query_matches_ls_output(peer_factory: Callable[..., Peer], ct_factory: Any,
                                 tmp_path: Path, archive_dir: Path) -> None:
    ct_factory.series(2, patient_id="P1", patient_name="DOE^JOHN", study_date="20240105")
    ct_factory.series(1, patient_id="P2", patient_name="ROE^JANE", study_date="20240301")
    ct_factory(patient_id="P3", patient_name="Müller^Hans",
               extra={"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Müller^Hans"})
    files = sorted(ct_factory.directory.rglob("*.dcm"))
    peer = peer_factory(files)
    peer_archive = str(peer.archive.root)

    for args in (["-k", "PatientName=doe*"], ["-k", "StudyDate=20240101-20240131"], [],
                 ["-k", "PatientName=Mü*"], ["--level", "series", "-k", "PatientID=P1"],
                 ["--level", "patient"]):
        remote = run_cli("query", peer.spec, *args, "--json")
        assert remote.returncode == 0, remote.stderr
        local = run_cli("--archive", peer_archive, "ls", *args, "--json")
        got, want = _json_lines(remote.stdout), _json_lines(local.stdout)
        assert len(got) == len(want) and got, args
        for g, w in zip(got, want):
            common = set(g) & set(w)
            assert {k: g[k] for k in common} == {k: w[k] for k in common}, args
    names = {r["PatientName"] for r in _json_lines(run_cli("query", peer.spec, "--json").stdout)}
    assert "Müller^Hans" in names

    csv_out = run_cli("query", peer.spec, "--csv", "-k", "PatientID=P2")
    assert csv_out.returncode == 0 and csv_out.stdout.splitlines()[0].startswith("PatientID,PatientName")
    assert len(csv_out.stdout.splitlines()) == 2
    table = run_cli("query", peer.spec)
    assert table.returncode == 0 and "DOE^JOHN" in table.stdout


def test_query_bad_filter_is_usage_error(archive_dir: Path) -> None:
    proc = run_cli("query", "X@127.0.0.1:104", "-k", "StudyDate=2024*")
    assert proc.returncode == 2


# -- get and move into our archive ------------------------------------------------------------


def test_get_into_archive_counts_what_arrived(peer_factory: Callable[..., Peer], ct_factory: Any,
                                              archive_dir: Path) -> None:
    study = generate_uid()
    ct_factory.series(3, study_uid=study, patient_id="P1")
    ct_factory.series(2, patient_id="P2")
    peer = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")))
    proc = run_cli("get", peer.spec, "-k", "PatientID=P1", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = _summary(proc)
    assert summary["matched"] == 1 and summary["completed"] == 3
    assert (summary["received"], summary["stored"], summary["duplicates"], summary["missing"]) == (3, 3, 0, 0)
    listed = _json_lines(run_cli("ls", "--json").stdout)
    assert [r["StudyInstanceUID"] for r in listed] == [study]
    assert listed[0]["NumberOfStudyRelatedInstances"] == 3

    again = run_cli("get", peer.spec, "-k", f"StudyInstanceUID={study}", "--json")
    assert again.returncode == 0
    assert (_summary(again)["stored"], _summary(again)["duplicates"]) == (0, 3)


def test_get_and_move_need_a_selection(archive_dir: Path) -> None:
    assert run_cli("get", "X@127.0.0.1:104").returncode == 2
    assert run_cli("move", "X@127.0.0.1:104", "--to", "Y").returncode == 2


def test_move_to_our_own_ae_receives_into_archive(peer_factory: Callable[..., Peer], ct_factory: Any,
                                                  archive_dir: Path) -> None:
    ct_factory.series(2, patient_id="P1", series_description="AXIAL")
    ct_factory.series(3, patient_id="P1", series_description="CORONAL")
    peer = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")))
    port = free_port()
    assert run_cli("config", "set", "ae_title", "LOCAL").returncode == 0
    assert run_cli("config", "set", "port", str(port)).returncode == 0
    assert run_cli("config", "set", "host", "127.0.0.1").returncode == 0
    peer.add_destination("local", "LOCAL", port)
    proc = run_cli("move", peer.spec, "--to", "LOCAL", "--level", "series",
                   "-k", "SeriesDescription=CORONAL", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["matched"], summary["completed"], summary["expected"]) == (1, 3, 3)
    assert (summary["received"], summary["stored"], summary["missing"]) == (3, 3, 0)
    listed = _json_lines(run_cli("ls", "--level", "series", "--json").stdout)
    assert [(r["SeriesDescription"], r["NumberOfSeriesRelatedInstances"]) for r in listed] == [("CORONAL", 3)]


def test_move_to_a_third_node_and_unknown_destination(peer_factory: Callable[..., Peer], ct_factory: Any,
                                                      archive_dir: Path) -> None:
    ct_factory.series(2, patient_id="P1")
    source = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")), aet="SOURCE")
    target = peer_factory(aet="TARGET")
    source.add_destination("target", "TARGET", target.node.port)
    proc = run_cli("move", source.spec, "--to", "TARGET", "-k", "PatientID=P1", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = _summary(proc)
    assert summary["completed"] == 2 and "received" not in summary
    assert len(target.instance_uids()) == 2

    unknown = run_cli("move", source.spec, "--to", "NOWHERE", "-k", "PatientID=P1", "--json")
    assert unknown.returncode == 4
    assert "0xA801" in unknown.stderr and _summary(unknown)["status"] == "0xA801"


def test_move_to_own_ae_while_serve_runs_counts_from_the_archive(
        peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:
    """A running node on our archive holds the port: it receives, and the move checks the
    archive for every instance the source lists."""
    ct_factory.series(3, patient_id="P1")
    source = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")), aet="SOURCE")
    local = Archive.open(archive_dir)
    local.config.ae_title, local.config.host = "LOCAL", "127.0.0.1"
    local.config.port = free_port()
    local.save_config()
    ours = serve(local, ScpOptions(ae_title="LOCAL", host="127.0.0.1", port=local.config.port,
                                   temp_dir=local.tmp_dir))
    try:
        source.add_destination("local", "LOCAL", local.config.port)
        proc = run_cli("move", source.spec, "--to", "LOCAL", "-k", "PatientID=P1", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "pacsctl serve" in proc.stderr  # told why it did not listen itself
        summary = _summary(proc)
        assert (summary["expected"], summary["received"], summary["stored"], summary["missing"]) == (3, 3, 3, 0)
    finally:
        ours.stop(graceful=True, timeout=10)
    assert len(_json_lines(run_cli("ls", "--level", "instance", "--json").stdout)) == 3


def test_move_listener_only_takes_stores_from_the_source(ct_factory: Any, archive_dir: Path) -> None:
    """While a move into our archive runs, the temporary listener takes C-STOREs from the
    node moving to us only (and the archive's allow-list): nobody else slips data in."""
    from pacsctl.config import Node
    from pacsctl.remote.receiver import receiving
    from pacsctl.errors import NetworkError
    from pacsctl.net import scu

    archive = Archive.open(archive_dir)
    archive.config.host, archive.config.port = "127.0.0.1", free_port()
    me = Node(name="me", aet="LOCAL", host="127.0.0.1", port=archive.config.port)
    with receiving(archive, "LOCAL", "SOURCE") as (receiver, listening):
        assert listening
        with pytest.raises(NetworkError):
            scu.store(me, [ct_factory()], calling_aet="INTRUDER", timeout=5)
        [result] = scu.store(me, [ct_factory()], calling_aet="SOURCE", timeout=5)
        assert result.ok and receiver.stored == 1


# -- what a move summary says (issue 10, items 6 and 8) -------------------------------------


def _local_archive_served(archive_dir: Path, allow: list[str] | None = None,
                          config_allow: list[str] | None = None) -> tuple[Archive, RunningNode]:
    """Our own archive as LOCAL, with a node serving it on its configured port (the port a
    move to LOCAL cannot take), taking C-STOREs from `allow` (the running node's list) while
    the configuration on disk says `config_allow`."""
    local = Archive.open(archive_dir)
    local.config.ae_title, local.config.host = "LOCAL", "127.0.0.1"
    local.config.port = free_port()
    local.config.allow = list(config_allow or [])
    local.save_config()
    ours = serve(local, ScpOptions(ae_title="LOCAL", host="127.0.0.1", port=local.config.port,
                                   allow=list(allow or []), temp_dir=local.tmp_dir))
    return local, ours


def test_move_to_unknown_destination_says_nothing_was_sent(
        peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:
    ct_factory.series(2, patient_id="P1")
    source = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")), aet="SOURCE")
    proc = run_cli("move", source.spec, "--to", "NOSUCH", "-k", "PatientID=P1")
    assert proc.returncode == 4, proc.stderr
    assert "SOURCE refused to move 1 study(s) to NOSUCH: nothing was sent (status 0xA801)" in proc.stderr
    assert "moved" not in proc.stderr


def test_move_while_serve_runs_does_not_count_what_was_there_as_arrived(
        peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:
    """Everything already archived, `serve` holding our port: nothing new arrives and the
    summary says so ("arrived 3" was reported before); to an unknown destination nothing
    is counted at all."""
    ct_factory.series(3, patient_id="P1")
    files = sorted(ct_factory.directory.rglob("*.dcm"))
    source = peer_factory(files, aet="SOURCE")
    local, ours = _local_archive_served(archive_dir)
    local.ingest([(f.read_bytes(), str(f)) for f in files])
    try:
        source.add_destination("local", "LOCAL", local.config.port)
        proc = run_cli("move", source.spec, "--to", "LOCAL", "-k", "PatientID=P1", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        summary = _summary(proc)
        assert (summary["received"], summary["stored"], summary["already_archived"], summary["missing"]) == (0, 0, 3, 0)
        human = run_cli("move", source.spec, "--to", "LOCAL", "-k", "PatientID=P1")
        assert "0 new, 3 held before the move" in human.stderr and "arrived 3" not in human.stderr

        del source.archive.config.nodes["local"]
        source.archive.save_config()
        unknown = run_cli("move", source.spec, "--to", "LOCAL", "-k", "PatientID=P1", "--json", "--settle", "30")
        assert unknown.returncode == 4
        assert "received" not in _summary(unknown) and "0xA801" in unknown.stderr
    finally:
        ours.stop(graceful=True, timeout=10)


def test_move_checks_our_allow_list_before_moving(
        peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:
    ct_factory.series(2, patient_id="P1")
    source = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")), aet="SOURCE")
    local, ours = _local_archive_served(archive_dir, allow=["MODALITY"], config_allow=["MODALITY"])
    try:
        source.add_destination("local", "LOCAL", local.config.port)
        proc = run_cli("move", source.spec, "--to", "LOCAL", "-k", "PatientID=P1")
        assert proc.returncode == 1, proc.stderr
        assert "error: our allow-list does not list SOURCE" in proc.stderr
        assert "config set allow MODALITY,SOURCE" in proc.stderr
        assert "known modalities" not in proc.stderr  # not the peer's fault
    finally:
        ours.stop(graceful=True, timeout=10)
    assert not Archive.open(archive_dir).index.instances()


def test_move_reports_our_rejects_of_the_source_from_the_audit_log(
        peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:
    """The configuration lists the source but the running node still has an older allow-list:
    its rejects of the source during the move are reported, not blamed on the peer."""
    ct_factory.series(2, patient_id="P1")
    source = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")), aet="SOURCE")
    local, ours = _local_archive_served(archive_dir, allow=["MODALITY"], config_allow=["MODALITY", "SOURCE"])
    try:
        source.add_destination("local", "LOCAL", local.config.port)
        proc = run_cli("move", source.spec, "--to", "LOCAL", "-k", "PatientID=P1", "--settle", "1")
        assert proc.returncode == 1, proc.stderr
        assert "we refused an association from SOURCE" in proc.stderr
        assert "error: our node refused 1 association(s) of SOURCE during the move" in proc.stderr
        assert "kill -HUP" in proc.stderr and "known modalities" not in proc.stderr
    finally:
        ours.stop(graceful=True, timeout=10)
