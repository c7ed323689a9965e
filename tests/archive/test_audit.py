"""The audit log: NDJSON appends from threads and processes, `since` filtering, no patient IDs."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pacsctl.archive.audit import AuditLog, parse_since, read_audit
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
