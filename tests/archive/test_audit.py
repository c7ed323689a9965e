"""The audit log: NDJSON appends from threads and processes, `since` filtering, no patient IDs."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pacsctl.archive.audit import (
    AuditEvent,
    AuditLog,
    AuditQuery,
    parse_since,
    read_audit,
    record_action,
    redact_argv,
    select_records,
)
from pacsctl.errors import UsageError


def _append_many(path: str, tag: str, count: int) -> None:
    log = AuditLog(Path(path))
    for i in range(count):
        log.append({"event": "store", "who": tag, "n": i, "pad": "x" * 500})
    log.close()


def test_append_and_read_back(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.append({"event": "associate", "calling_aet": "CT01"})
    log.append({"event": "store", "SOPInstanceUID": "1.2.3", "status": 0})
    log.close()
    records = list(read_audit(tmp_path / "audit.log"))
    assert [r["event"] for r in records] == ["associate", "store"]
    assert all("time" in r for r in records)
    assert (tmp_path / "audit.log").stat().st_mode & 0o077 == 0  # private to the owner


def test_patient_identifiers_never_written(tmp_path):
    log = AuditLog(tmp_path / "audit.log")
    log.append({"event": "find", "PatientName": "Doe^John", "PatientID": "123",
                "StudyInstanceUID": "1.2"})
    log.close()
    text = (tmp_path / "audit.log").read_text()
    assert "Doe" not in text and "123" not in text and "1.2" in text


def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "audit.log"
    threads = [threading.Thread(target=_append_many, args=(str(path), f"t{i}", 200))
               for i in range(4)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), f"p{i}", 200)) for i in range(2)]
    for w in threads + procs:
        w.start()
    for w in threads + procs:
        w.join()
    records = list(read_audit(path))
    assert len(records) == 6 * 200  # every line whole and parsable
    assert len(path.read_text().splitlines()) == 6 * 200


def test_since_filters_and_torn_lines_are_skipped(tmp_path):
    path = tmp_path / "audit.log"
    old = (datetime.now(timezone.utc) - timedelta(days=3)).isoformat()
    log = AuditLog(path)
    log.append({"event": "store", "time": old})
    log.append({"event": "find"})
    log.close()
    with open(path, "a") as fh:
        fh.write('{"event": "torn", "ti')  # a writer killed mid-line
    assert [r["event"] for r in read_audit(path, parse_since("1d"))] == ["find"]
    assert len(list(read_audit(path))) == 2


def test_parse_since():
    now = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2024-04-30") == datetime(2024, 4, 30, tzinfo=timezone.utc)
    with pytest.raises(UsageError):
        parse_since("yesterday-ish")


def test_missing_log_reads_empty(tmp_path):
    assert list(read_audit(tmp_path / "nope.log")) == []


def test_statuses_are_written_as_hex_and_old_decimal_records_read_as_hex(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.append({"event": "store", "status": 0xB000})
    log.append({"event": "move", "status": "failed"})
    log.close()
    with open(path, "a") as fh:
        fh.write('{"event": "store", "status": 49152, "time": "2024-01-01T00:00:00+00:00"}\n')
    text = path.read_text()
    assert '"0xB000"' in text and "45056" not in text
    assert [r["status"] for r in read_audit(path)] == ["0xB000", "failed", "0xC000"]


def test_select_records_by_event_calling_uid_limit_and_tail(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    for i in range(6):
        log.append({"event": "store" if i % 2 else "find", "calling_aet": f"CT0{i % 3}",
                    "SOPInstanceUID": f"1.2.{i}"})
    log.append({"event": "send", "uids": ["1.2.3", "9.9"]})
    log.close()
    n = lambda records: [r.get("SOPInstanceUID") for r in records]  # noqa: E731
    assert n(select_records(path, AuditQuery(event=AuditEvent.STORE))) == ["1.2.1", "1.2.3", "1.2.5"]
    assert n(select_records(path, AuditQuery(calling_aet="CT01"))) == ["1.2.1", "1.2.4"]
    assert [r["event"] for r in select_records(path, AuditQuery(uid="1.2.3"))] == ["store", "send"]
    assert n(select_records(path, AuditQuery(), limit=2)) == ["1.2.0", "1.2.1"]
    assert n(select_records(path, AuditQuery(event=AuditEvent.FIND), tail=2)) == ["1.2.2", "1.2.4"]
    assert select_records(path, AuditQuery(), tail=0) == []


def test_recorded_command_lines_redact_identifying_filters():
    argv = ["send", "PACS", "-k", "PatientID=SECRET1", "--key=PatientName=DOE*", "-kPatientBirthDate=1970",
            "-k", "StudyInstanceUID=1.2.3", "-k", "StudyDate=2024-", "-k", "00100020=SECRET2",
            "-k", "StudyDescription=DOE", "-k", "oops", "--archive=/srv/pacs"]
    text = " ".join(redact_argv(argv))
    assert "SECRET" not in text and "DOE" not in text and "1970" not in text and "oops" not in text
    assert "PatientID=…" in text and "StudyInstanceUID=1.2.3" in text and "StudyDate=2024-" in text
    assert "--archive=/srv/pacs" in text


def test_record_action_writes_user_command_counts_and_uids(tmp_path):
    from pacsctl.archive.archive import Archive

    archive = Archive.open(tmp_path / "a")
    record_action(archive.root, AuditEvent.SEND,
                  {"files": 3, "sent": 2, "failed": 1, "ok": False, "elapsed": 0.5, "status": 0},
                  selection={"StudyInstanceUID": "1.2.3\\1.2.4", "PatientID": "SECRET"},
                  argv=["send", "PACS", "-k", "PatientID=SECRET"], node="PACS@127.0.0.1:104")
    record_action(tmp_path / "no-archive", AuditEvent.SEND, {"sent": 1})  # nothing created
    assert not (tmp_path / "no-archive").exists()
    (record,) = read_audit(archive.root / "audit.log")
    assert record["event"] == "send" and record["user"] and record["pid"] > 0
    assert record["command"] == "pacsctl send PACS -k PatientID=…"
    assert (record["files"], record["sent"], record["failed"], record["status"]) == (3, 2, 1, "0x0000")
    assert "ok" not in record and "elapsed" not in record
    assert record["uids"] == ["1.2.3", "1.2.4"] and record["node"] == "PACS@127.0.0.1:104"
    assert "SECRET" not in (archive.root / "audit.log").read_text()
