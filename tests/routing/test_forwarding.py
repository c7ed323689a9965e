"""Forwarding on arrival to a real pynetdicom Storage SCP: queued with the store, delivered
only when confirmed, held while the destination is down, dead letters and retry."""

from __future__ import annotations

import json
import os
import time
import types
from pathlib import Path

from pacsctl.archive.archive import Archive
from pacsctl.archive.outbox import QUEUE, route_dir
from pacsctl.config import CONFIG_NAME, load_config
from pacsctl.routing import forwarder
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


def test_forwarding_yields_to_stores_that_keep_arriving(archive_dir, ct_factory, sink, monkeypatch):
    """While intents keep arriving only those that waited MAX_LAG go; the rest in the quiet."""
    clock = types.SimpleNamespace(now=1_000_000.0)
    fake = types.SimpleNamespace(time=lambda: clock.now)
    monkeypatch.setattr("pacsctl.archive.outbox.time", fake)  # the intents' queue times
    monkeypatch.setattr("pacsctl.routing.forwarder.time", fake)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec)
        for path in ct_factory.series(2, patient_id="EARLY"):
            archive.ingest([(path.read_bytes(), str(path))])
        clock.now += forwarder.MAX_LAG + 5  # a stream of stores goes on since then
        for path in ct_factory.series(3, patient_id="LATE"):
            archive.ingest([(path.read_bytes(), str(path))])
    config = load_config(archive_dir / CONFIG_NAME)
    fwd = forwarder.RouteForwarder(archive_dir, config.routes["dest"], config)

    clock.now += 0.1  # the last store was just now: the node is receiving
    fwd.step()
    assert len(sink.received) == 2  # only what waited MAX_LAG
    assert fwd.step() == forwarder.GATHER and len(sink.received) == 2  # the young ones wait
    clock.now += forwarder.ARRIVALS_QUIET  # the stores stopped
    fwd.step()
    assert len(sink.received) == 5 and len(set(sink.received)) == 5


def test_route_run_once_does_not_wait_for_quiet(archive_dir, ct_factory, sink):
    """`route run --once` (cron) is a try now: it delivers what just arrived."""
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec)
        for path in ct_factory.series(2):
            archive.ingest([(path.read_bytes(), str(path))])
        assert run_once(archive_dir)[0].delivered == 2


def test_the_forwarder_takes_only_idle_cpu(archive_dir, serve_factory, sink):
    """serve's forwarder process runs under SCHED_IDLE: it never takes a core from the node."""
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec)
    server = serve_factory(archive_dir)
    pids = []
    deadline = time.monotonic() + 10
    while not pids and time.monotonic() < deadline:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"pacsctl.routing.process" in argv and str(archive_dir).encode() in argv:
                pids.append(int(proc.name))
        time.sleep(0.1)
    assert pids, "no forwarder process found"
    while os.sched_getscheduler(pids[0]) != os.SCHED_IDLE and time.monotonic() < deadline:
        time.sleep(0.05)  # it sets its policy as it starts
    assert os.sched_getscheduler(pids[0]) == os.SCHED_IDLE
    assert server.stop() == 0
