"""The migration ledger's durability rules, the retry classification and the time window."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest

from pacsctl.errors import NetworkFailure, UsageError
from pacsctl.migrate import retry
from pacsctl.migrate.ledger import Ledger, StudyEntry, StudyState
from pacsctl.migrate.window import Window


def _ledger(root: Path) -> Ledger:
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    return Ledger.open(root, "OLD PACS", "NEW")


def test_last_line_wins_and_a_torn_tail_is_dropped(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    ledger.put_many([StudyEntry("1.2.1"), StudyEntry("1.2.2")])
    ledger.put(ledger.get("1.2.1").changed(status=StudyState.DONE, attempts=1))  # type: ignore[union-attr]
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    assert ledger.path.name.startswith("OLD_PACS_") and ledger.path.name.endswith("--NEW.ndjson")
    with open(ledger.path, "ab") as fh:  # power lost in the middle of an append
        fh.write(b'{"StudyInstanceUID": "1.2.2", "status": "do')
    again = _ledger(tmp_path)
    assert again.counts() == {"studies": 2, "done": 1, "pending": 1, "failed": 0}
    assert again.get("1.2.1").attempts == 1  # type: ignore[union-attr]
    assert again.path.read_bytes().endswith(b"}\n")  # the torn tail is gone, appends start clean
    again.put(StudyEntry("1.2.3", status=StudyState.FAILED, reason="0xA801"))
    assert _ledger(tmp_path).counts()["failed"] == 1


def test_the_journal_is_compacted_atomically(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    entry = StudyEntry("1.2.9")
    for n in range(1001):
        entry = entry.changed(attempts=n)
        ledger.put_many([entry], durable=False)  # the fsyncs are not what is tested here
    assert len(ledger.path.read_bytes().splitlines()) < 10
    assert _ledger(tmp_path).get("1.2.9").attempts == 1000  # type: ignore[union-attr]


def test_typed_failures_decide_retries() -> None:
    assert retry.of_status(0x0000) is None and retry.of_status(0xB000) is None
    assert retry.of_status(0xA702) is retry.Kind.TRANSIENT and retry.of_status(0xA700) is retry.Kind.TRANSIENT
    assert retry.of_status(0xA801) is retry.Kind.PERMANENT and retry.of_status(0xC000) is retry.Kind.PERMANENT
    assert retry.of_network(NetworkFailure.LOST) is retry.Kind.TRANSIENT
    assert retry.of_network(NetworkFailure.TLS) is retry.Kind.PERMANENT
    backoff = retry.Backoff(attempts=9, base=2, cap=60)
    assert [backoff.delay(n) for n in (1, 2, 3, 6, 7)] == [2, 4, 8, 60, 60]


def test_window_over_midnight() -> None:
    window = Window.parse("19:00-07:00")
    assert window.contains(dt.datetime(2026, 1, 1, 23, 30)) and window.contains(dt.datetime(2026, 1, 1, 6, 59))
    assert not window.contains(dt.datetime(2026, 1, 1, 12, 0))
    assert window.seconds_until_open(dt.datetime(2026, 1, 1, 18, 0)) == 3600
    assert window.seconds_until_open(dt.datetime(2026, 1, 1, 20, 0)) == 0
    assert Window.parse("08:00-17:30").seconds_until_open(dt.datetime(2026, 1, 1, 18, 0)) == 14 * 3600
    for bad in ("7-19", "25:00-01:00", "10:00-10:00"):
        with pytest.raises(UsageError):
            Window.parse(bad)
