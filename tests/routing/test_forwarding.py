"""Forwarding on arrival to a real pynetdicom Storage SCP: queued with the store, delivered
only when confirmed, held while the destination is down, dead letters and retry."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

from pacsctl.archive.archive import Archive
from pacsctl.archive.outbox import QUEUE, route_dir
from pacsctl.routing.forwarder import run_once
from pacsctl.routing.queue import RouteQueue
from pacsctl.routing.routes import add_route, route_status
from tests.helpers import invoke_cli


def _import(archive: Path, *paths: Path, extra: tuple[str, ...] = ()) -> None:
    result = invoke_cli("--archive", archive, "import", *paths, "--jobs", "1", *extra)
    assert result.returncode == 0, result.stderr


def test_imported_instances_are_queued_and_delivered_once(archive_dir, ct_factory, sink, tmp_path):
    files = ct_factory.series(5, patient_id="P1")
    other = ct_factory(patient_id="P2", extra={"Modality": "MR"})
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec, {"Modality": "CT"})
    _import(archive_dir, *files, other)

    result = invoke_cli("--archive", archive_dir, "route", "run", "--once", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["delivered"] == 5
    assert len(sink.received) == 5 and len(set(sink.received)) == 5  # the MR did not match

    _import(archive_dir, *files)  # duplicates: nothing new to forward
    assert run_once(archive_dir)[0].delivered == 0
    assert len(sink.received) == 5
    status = invoke_cli("--archive", archive_dir, "route", "status", "--json")
    row = json.loads(status.stdout.splitlines()[0])
    assert (row["pending"], row["delivered"], row["dead"]) == (0, 5, 0)


def test_no_route_queues_nothing(archive_dir, ct_factory, sink):
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec)
    _import(archive_dir, ct_factory(), extra=("--no-route",))
    assert run_once(archive_dir)[0].delivered == 0
    assert sink.received == []


def test_a_down_destination_holds_the_queue(archive_dir, ct_factory, stopped_sink):
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", stopped_sink.spec, max_attempts=1)
    _import(archive_dir, *ct_factory.series(3))
    result = invoke_cli("--archive", archive_dir, "route", "run", "--once")
    assert result.returncode == 4, result.stderr
    with Archive.open(archive_dir) as archive:
        rows, dead = route_status(archive)
    assert rows[0]["pending"] == 3 and rows[0]["down"] and dead == []  # down is not a refusal
    stopped_sink.start()
    assert run_once(archive_dir)[0].delivered == 3
    assert len(set(stopped_sink.received)) == 3


def test_refused_instances_become_dead_letters_and_retry_delivers_them(archive_dir, ct_factory, sink):
    sink.status = 0xA700  # out of resources: a refusal of each instance
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec, max_attempts=2)
    _import(archive_dir, *ct_factory.series(2))
    run_once(archive_dir)  # attempt 1 (then a back-off the next run ignores)
    report = run_once(archive_dir)[0]
    assert report.dead == 2 and sink.received == []
    result = invoke_cli("--archive", archive_dir, "route", "status")
    assert result.returncode == 3 and "dead letters" in result.stderr
    sink.status = 0x0000
    assert run_once(archive_dir)[0].delivered == 0  # dead letters stay put
    assert invoke_cli("--archive", archive_dir, "route", "retry", "dest").returncode == 0
    assert run_once(archive_dir)[0].delivered == 2
    assert len(set(sink.received)) == 2


def test_delay_waits_for_a_quiet_series(archive_dir, ct_factory, sink, monkeypatch):
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec, delay=600)
    _import(archive_dir, *ct_factory.series(2))
    assert run_once(archive_dir)[0].delivered == 0  # the series arrived just now
    later = types.SimpleNamespace(time=lambda: time.time() + 601)  # ten minutes on
    monkeypatch.setattr("pacsctl.routing.forwarder.time", later)
    assert run_once(archive_dir)[0].delivered == 2


def test_an_intent_whose_writer_died_unnamed_is_dropped(archive_dir, ct_factory, sink):
    """A writer killed after queuing an intent but before naming its instance (never
    acknowledged) leaves an intent without outcome: the missing file drops it."""
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec)
        batch = archive.begin_ingest([(ct_factory().read_bytes(), "test")])
        archive.sync([batch])  # the intent is durable with the data; no name yet
        for _, _, stage in batch.staged:  # the writer "dies" here: no outcome, no name
            stage.temp_path.unlink()
        archive.outbox.close()
    queue = RouteQueue(archive_dir, "dest")
    queue.refresh()
    assert queue.counts()["pending"] == 0 and sink.received == []
    assert list((route_dir(archive_dir, "dest") / QUEUE).glob("*.ndjson"))
    queue.compact()
    assert not list((route_dir(archive_dir, "dest") / QUEUE).glob("*.ndjson"))


def test_a_long_running_writer_rotates_its_journal_so_delivered_ones_go(archive_dir, ct_factory, sink,
                                                                        monkeypatch):
    monkeypatch.setattr("pacsctl.archive.outbox.ROTATE_AFTER", 2)
    queue_dir = route_dir(archive_dir, "dest") / QUEUE
    with Archive.open(archive_dir) as archive:  # a writer that stays open, as serve's workers do
        add_route(archive, "dest", sink.spec)
        for path in ct_factory.series(5):
            archive.ingest([(path.read_bytes(), str(path))])
        assert len(list(queue_dir.glob("*.ndjson"))) == 3  # 2 + 2 + 1 intents
        assert run_once(archive_dir)[0].delivered == 5  # (compacts at the end)
        assert len(list(queue_dir.glob("*.ndjson"))) == 1  # the full, settled ones are gone
    assert len(set(sink.received)) == 5
    queue = RouteQueue(archive_dir, "dest")
    queue.refresh()
    assert queue.counts()["delivered"] == 5 and queue.counts()["pending"] == 0
