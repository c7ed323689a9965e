"""`pacsctl serve` and `pacsctl audit` as a user runs them (real processes, real sockets)."""

from __future__ import annotations

import errno
import json

import pydicom
import pytest
from pydicom.dataset import Dataset

from benchmarks.peers import wait_for_port
from pacsctl.config import Node
from pacsctl.archive.archive import Archive
from pacsctl.node.service import options_from_config, serve
from pacsctl.storage import files
from pacsctl.net import scu
from tests.helpers import CliProcess, free_port, run_cli

SECRET_NAME = "Geheim^Patientin"
SECRET_ID = "SECRET-ID-4711"


def _node(srv) -> Node:
    return Node("srv", srv.aet, "127.0.0.1", srv.port)


def _find(node: Node, level: str, **keys: str) -> list[Dataset]:
    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ident, k, v)
    return list(scu.find(node, ident))


def test_serve_stores_answers_and_stops_cleanly(serve_factory, archive_dir, ct_factory):
    srv = serve_factory(archive_dir)
    files = ct_factory.series(3, patient_id="P1", patient_name="Doe^John")
    assert all(r.ok for r in scu.store(_node(srv), files))
    studies = _find(_node(srv), "STUDY", PatientID="P1", StudyInstanceUID="",
                    NumberOfStudyRelatedInstances="")
    assert len(studies) == 1 and int(studies[0].NumberOfStudyRelatedInstances) == 3
    assert srv.stop() == 0
    err = srv.stderr()
    assert "no allow-list" in err and "stopped" in err
    listed = run_cli("--archive", archive_dir, "ls", "--level", "instance", "--json")
    assert len([line for line in listed.stdout.splitlines() if "SOPInstanceUID" in line]) == 3


def test_audit_command(serve_factory, archive_dir, ct_factory):
    srv = serve_factory(archive_dir, "--allow", "PACSCTL", "--allow", "OTHER")
    scu.store(_node(srv), [ct_factory()])
    with pytest.raises(Exception):
        scu.echo(_node(srv), calling_aet="INTRUDER")
    srv.stop()
    out = run_cli("--archive", archive_dir, "audit", "--json")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    events = [r["event"] for r in records]
    assert {"associate", "store", "release", "reject"} <= set(events)
    store = next(r for r in records if r["event"] == "store")
    assert store["status"] == "0x0000" and store["calling_aet"] == "PACSCTL" and store["SOPInstanceUID"]
    assert next(r for r in records if r["event"] == "reject")["calling_aet"] == "INTRUDER"
    only = run_cli("--archive", archive_dir, "audit", "--json", "--since", "1h", "-e", "reject")
    assert [json.loads(x)["event"] for x in only.stdout.splitlines()] == ["reject"]
    future = run_cli("--archive", archive_dir, "audit", "--json", "--since", "2999-01-01")
    assert future.stdout == ""
    table = run_cli("--archive", archive_dir, "audit")
    assert "INTRUDER" in table.stdout
    bad = run_cli("--archive", archive_dir, "audit", "--since", "whenever")
    assert bad.returncode == 2


def test_no_patient_data_in_logs_even_verbose(tmp_path, archive_dir, ct_factory):
    port = free_port()
    proc = CliProcess("-vv", "--archive", archive_dir, "serve", "--host", "127.0.0.1",
                      "--port", str(port), "--workers", "1", log_dir=tmp_path / "log")
    try:
        wait_for_port(port, 30, proc.proc)
        node = Node("n", "PACSCTL", "127.0.0.1", port)
        files = [ct_factory(patient_id=SECRET_ID, patient_name=SECRET_NAME)]
        assert all(r.ok for r in scu.store(node, files))
        found = _find(node, "STUDY", PatientName="Geheim*", PatientID="", StudyInstanceUID="")
        assert str(found[0].PatientName) == SECRET_NAME  # the answer has it, the logs must not
        with pytest.raises(Exception):  # a failing query is logged: without its identifier
            _find(node, "NOPE", PatientName="Geheim*")
    finally:
        assert proc.stop() == 0
    logs = proc.stderr() + proc.stdout()
    assert "PACSCTL" in logs  # it did log
    assert SECRET_NAME.split("^")[0] not in logs and SECRET_ID not in logs
    audit = (archive_dir / "audit.log").read_text()
    assert SECRET_NAME.split("^")[0] not in audit and SECRET_ID not in audit


def test_unparsable_instance_is_refused_and_quarantined(serve_factory, archive_dir, ct_factory,
                                                        tmp_path):
    srv = serve_factory(archive_dir)
    broken = ct_factory()
    ds = pydicom.dcmread(broken)
    del ds.StudyInstanceUID  # the archive cannot file it
    ds.save_as(broken)
    good = ct_factory()
    results = scu.store(_node(srv), [broken, good])
    assert [r.status for r in results] == [0xC000, 0x0000]  # and the association went on
    srv.stop()
    with Archive.open(archive_dir, create=False) as arch:
        reasons = [q["reason"] for q in arch.quarantined()]
    assert any("StudyInstanceUID" in r for r in reasons)


def test_disk_full_at_the_commit_answers_a700_and_keeps_serving(archive_dir, ct_factory, monkeypatch):
    """The durability barrier itself fails (ENOSPC, as a file system without room for its
    metadata says): 0xA700, no temp file left, and the next store succeeds. (A disk full while
    the data set streams in: tests/archive/test_crash.py, on a real full file system.)"""
    archive = Archive.open(archive_dir)
    node = serve(archive, options_from_config(archive, host="127.0.0.1", port=0))
    try:
        target = Node("n", "PACSCTL", "127.0.0.1", node.port)
        real_barrier = files.barrier

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(files, "barrier", full)
        assert [r.status for r in scu.store(target, [ct_factory()])] == [0xA700]
        assert [p for p in (archive_dir / "tmp").iterdir()] == []
        monkeypatch.setattr(files, "barrier", real_barrier)
        assert [r.status for r in scu.store(target, [ct_factory()])] == [0x0000]
    finally:
        node.stop()


def test_tls_options_must_come_together(archive_dir, tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    out = run_cli("--archive", archive_dir, "serve", "--tls-cert", str(cert))
    assert out.returncode == 2 and "tls" in out.stderr.lower()


def test_port_in_use_is_a_clean_error(serve_factory, archive_dir, tmp_path):
    srv = serve_factory(archive_dir, "--workers", "1")
    other = run_cli("--archive", tmp_path / "other", "serve", "--host", "127.0.0.1", "--port",
                    str(srv.port), "--workers", "1", timeout=30)
    assert other.returncode == 4 and "cannot listen" in other.stderr
