"""`pacsctl audit` and what reaches the audit log (issue 10 item 12): the real reason of a
reject, the CLI's own actions (user, command, counts, UIDs), filters and a typo'd event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from pacsctl.archive.archive import AUDIT_LOG, Archive
from pacsctl.archive.audit import AuditLog, read_audit
from pacsctl.config import Node
from pacsctl.errors import NetworkError
from pacsctl.net import scu
from pacsctl.net.types import ScpOptions
from pacsctl.node.service import serve
from tests.helpers import run_cli


def _records(archive: Path, event: str | None = None) -> list[dict[str, Any]]:
    return [r for r in read_audit(archive / AUDIT_LOG) if event is None or r["event"] == event]


def _audit_json(archive: Path, *args: str) -> list[dict[str, Any]]:
    proc = run_cli("--archive", archive, "audit", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_rejects_record_the_reason_sent_and_the_called_ae_title(tmp_path, serve_factory):
    srv = serve_factory(tmp_path / "node", "--allow", "GOODAE")
    with pytest.raises(NetworkError):
        scu.echo(Node("x", "NOTUS", "127.0.0.1", srv.port), calling_aet="GOODAE")
    with pytest.raises(NetworkError):
        scu.echo(Node("x", srv.aet, "127.0.0.1", srv.port), calling_aet="BADAE")
    assert scu.echo(Node("x", srv.aet, "127.0.0.1", srv.port), calling_aet="GOODAE") >= 0
    assert srv.stop() == 0
    rejects = _records(srv.archive, "reject")
    assert [(r["calling_aet"], r["called_aet"], r["reason"]) for r in rejects] == [
        ("GOODAE", "NOTUS", "called AE title mismatch"),
        ("BADAE", srv.aet, "calling AE title not allowed"),
    ]


def test_unknown_event_is_a_usage_error_naming_the_events(tmp_path):
    Archive.open(tmp_path / "a").close()
    proc = run_cli("--archive", tmp_path / "a", "audit", "--event", "stor")
    assert proc.returncode == 2
    assert "stor" in proc.stderr
    assert all(name in proc.stderr for name in ("associate", "store", "import", "retrieve"))


def test_calling_uid_limit_and_tail_options(tmp_path):
    archive = Archive.open(tmp_path / "a")
    log = AuditLog(archive.root / AUDIT_LOG)
    for i in range(5):
        log.append({"event": "store", "calling_aet": "CT01" if i < 3 else "MR01",
                    "SOPInstanceUID": f"1.2.{i}", "status": 0})
    log.close()
    uids = lambda records: [r["SOPInstanceUID"] for r in records]  # noqa: E731
    assert uids(_audit_json(archive.root, "--calling", "MR01")) == ["1.2.3", "1.2.4"]
    assert uids(_audit_json(archive.root, "--uid", "1.2.2")) == ["1.2.2"]
    assert uids(_audit_json(archive.root, "--limit", "2")) == ["1.2.0", "1.2.1"]
    assert uids(_audit_json(archive.root, "--tail", "2", "--calling", "CT01")) == ["1.2.1", "1.2.2"]
    assert _audit_json(archive.root)[0]["status"] == "0x0000"
    table = run_cli("--archive", archive.root, "audit", "--tail", "1")
    assert table.returncode == 0 and "0x0000" in table.stdout and "1.2.4" in table.stdout
    both = run_cli("--archive", archive.root, "audit", "--tail", "1", "--limit", "1")
    assert both.returncode == 2


def test_import_backup_and_repair_are_recorded(tmp_path, ct_factory):
    files = ct_factory.series(3, patient_id="SECRETPID", patient_name="SECRET^NAME")
    archive = tmp_path / "a"
    assert run_cli("--archive", archive, "import", "--dry-run", *files).returncode == 0
    assert not (archive / AUDIT_LOG).exists()  # a dry run did nothing to record
    assert run_cli("--archive", archive, "import", "--jobs", "1", *files).returncode == 0
    assert run_cli("--archive", archive, "backup", tmp_path / "bk").returncode == 0
    assert run_cli("--archive", archive, "verify", "--repair-from", tmp_path / "bk").returncode == 0
    (imported,) = _audit_json(archive, "--event", "import")
    assert imported["imported"] == 3 and imported["files"] == 3 and imported["user"]
    assert imported["command"].startswith("pacsctl --archive") and " import --jobs 1 " in imported["command"]
    (backup,) = _audit_json(archive, "--event", "backup")
    assert backup["copied"] == 3 and backup["dest"] == str(tmp_path / "bk")
    (repair,) = _audit_json(archive, "--event", "repair")
    assert repair["repaired"] == 0 and repair["source"] == str(tmp_path / "bk")
    assert "SECRET" not in (archive / AUDIT_LOG).read_text()


def test_send_and_get_are_recorded_with_uids_and_no_patient_values(tmp_path, ct_factory):
    study = generate_uid()
    files = ct_factory.series(2, patient_id="SECRETPID", study_uid=study)
    peer_archive = Archive.open(tmp_path / "peer")
    node = serve(peer_archive, ScpOptions(ae_title="PEER", host="127.0.0.1", port=0,
                                          temp_dir=peer_archive.tmp_dir))
    try:
        spec = f"PEER@127.0.0.1:{node.port}"
        ours = tmp_path / "ours"
        assert run_cli("--archive", ours, "import", *files).returncode == 0
        proc = run_cli("--archive", ours, "send", spec, "-k", "PatientID=SECRETPID", "--json")
        assert proc.returncode == 0, proc.stderr
        proc = run_cli("--archive", ours, "get", spec, "-k", f"StudyInstanceUID={study}", "--json")
        assert proc.returncode == 0, proc.stderr
    finally:
        node.stop(graceful=False, timeout=10)
        peer_archive.close()
    (sent,) = _audit_json(ours, "--event", "send")
    assert sent["sent"] == 2 and sent["called_aet"] == "PEER" and sent["node"] == spec
    assert "PatientID=…" in sent["command"]
    retrieves = _audit_json(ours, "--event", "retrieve")
    assert retrieves[-1]["service"] == "get" and retrieves[-1]["uids"] == [study]
    assert retrieves[-1]["matched"] == 1 and retrieves[-1]["received"] == 2, retrieves
    assert _audit_json(ours, "--uid", study)[-1]["event"] == "retrieve"
    assert "SECRET" not in (ours / AUDIT_LOG).read_text()


def test_audit_table_fits_80_columns_and_pipes_as_tab_separated_text(tmp_path):
    import re

    from typer.testing import CliRunner

    from pacsctl.cli.app import app

    archive = Archive.open(tmp_path / "a")
    log = AuditLog(archive.root / AUDIT_LOG)
    sop = "1.2.826.0.1.3680043.8.498.69610827370990676198518339377024823212"
    log.append({"event": "store", "calling_aet": "CT01", "called_aet": "PACSCTL", "peer": "127.0.0.1:40000",
                "SOPInstanceUID": sop, "status": 0, "time": "2024-05-01T08:00:01.123+00:00"})
    log.close()
    args = ["--archive", str(archive.root), "audit"]
    table = CliRunner().invoke(app, args, env={"COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"})
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in table.stdout.splitlines()]
    assert table.exit_code == 0 and all(len(line) <= 80 for line in lines), table.stdout
    assert "2024-05-01 08:00:01" in lines[2] and "CT01" in lines[2] and "0x0000" in lines[2]
    offset = lines[0].index("detail")
    assert f"SOPInstanceUID={sop}" in "".join(line[offset:].strip() for line in lines[2:])  # wrapped, not cut
    piped = CliRunner().invoke(app, args, env={"NO_COLOR": "1"})
    assert piped.stdout.splitlines()[0] == "time\tevent\tcalling_aet\tcalled_aet\tpeer\tstatus\tdetail"


def test_a_reject_for_the_association_limit_says_so(tmp_path, serve_factory):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    srv = serve_factory(tmp_path / "node", "--max-associations", "1", "--workers", "1")
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    held = ae.associate("127.0.0.1", srv.port, ae_title=srv.aet)
    try:
        assert held.is_established
        with pytest.raises(NetworkError):
            scu.echo(Node("x", srv.aet, "127.0.0.1", srv.port), calling_aet="SECOND")
    finally:
        held.release()
        ae.shutdown()
    assert srv.stop() == 0
    (reject,) = _records(srv.archive, "reject")
    assert (reject["calling_aet"], reject["called_aet"], reject["reason"]) == (
        "SECOND", srv.aet, "too many associations")
