"""A C-STORE route whose link breaks mid-association (tests/netproxy.py between the forwarder
and a real pynetdicom Storage SCP): nothing counts as delivered without its C-STORE-RSP, a
broken link is no refusal (no attempt counted, no dead letter), and once healed all arrive,
at most the instance in flight at the cut twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pacsctl.archive.archive import Archive
from pacsctl.config import CONFIG_NAME, Config, Route, load_config, parse_node_spec
from pacsctl.remote.send import SendItem, send
from pacsctl.routing.destinations import DicomDestination
from pacsctl.routing.forwarder import RouteForwarder, read_status, run_once
from pacsctl.routing.queue import EntryState, RouteQueue
from pacsctl.routing.routes import add_route
from tests.netproxy import NetProxy

TIMEOUT = 2.0  # the destination's DIMSE/ACSE time-out in these tests (30 s by default)


def short_timeouts(root: Path, route: Route, config: Config) -> DicomDestination:
    return DicomDestination(root, route.to, config, timeout=TIMEOUT)


@pytest.fixture
def proxy(sink):
    with NetProxy(("127.0.0.1", sink.port), lifetime=120) as link:
        yield link


def _queue(archive_dir: Path, ct_factory, proxy: NetProxy, count: int) -> list[str]:
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", f"SINK@127.0.0.1:{proxy.port}", max_attempts=1, max_backoff=1.0)
        for path in ct_factory.series(count):
            archive.ingest([(path.read_bytes(), str(path))])
        uids = [r["SOPInstanceUID"] for r in archive.index.instances()]
    return uids


def _states(archive_dir: Path) -> dict[str, EntryState]:
    queue = RouteQueue(archive_dir, "dest")
    queue.refresh()
    return {e.sop_instance_uid: e.state for e in queue.entries.values()}


def test_a_cut_mid_association_leaves_the_unconfirmed_pending_and_heals(archive_dir, ct_factory, sink, proxy):
    uids = _queue(archive_dir, ct_factory, proxy, 20)
    proxy.cut_after(60_000)  # about the 6th of 20 instances (9 kB each)
    report = run_once(archive_dir, factory=short_timeouts)[0]
    assert proxy.wait_cut(0) and proxy.cuts >= 1
    states = _states(archive_dir)
    delivered = {u for u, s in states.items() if s is EntryState.DELIVERED}
    assert 0 < report.delivered == len(delivered) < 20
    assert delivered <= set(sink.received)  # never "delivered" without the peer's answer
    assert report.dead == 0 and report.refused == 0  # a broken link is no refusal (max_attempts=1)
    assert {s for u, s in states.items() if u not in delivered} == {EntryState.PENDING}
    assert len(sink.received) - len(delivered) <= 1  # at most the one in flight got there unconfirmed

    proxy.heal()
    again = run_once(archive_dir, factory=short_timeouts)[0]
    assert again.delivered == 20 - len(delivered) and again.pending == 0
    assert set(sink.received) == set(uids)
    assert len(sink.received) - len(uids) <= 1  # the duplicate, if any: the one in flight at the cut


def test_a_blackholed_destination_times_out_is_down_backs_off_then_delivers(
    archive_dir, ct_factory, sink, proxy
):
    """The link goes silent mid-association (nothing forwarded, nothing closed): the DIMSE
    time-out ends the round, the next round's association times out (the destination is down,
    back-off), and once the link is back everything arrives."""
    uids = _queue(archive_dir, ct_factory, proxy, 10)
    time.sleep(1.1)  # the node is quiet (forwarding yields to stores arriving in the last second)
    config = load_config(archive_dir / CONFIG_NAME)
    fwd = RouteForwarder(archive_dir, config.routes["dest"], config, short_timeouts)
    proxy.blackhole_after(30_000)  # after about 3 instances
    started = time.monotonic()
    fwd.step()
    elapsed = time.monotonic() - started
    assert proxy.wait_cut(0)
    # the unanswered one (DIMSE time-out), a fresh association for the rest and one for the
    # unanswered alone (each its ACSE time-out): the round ends, on a dead link, in ~3 time-outs
    assert elapsed < 3 * TIMEOUT + 10, elapsed
    states = _states(archive_dir)
    delivered = {u for u, s in states.items() if s is EntryState.DELIVERED}
    assert 0 < len(delivered) < 10 and delivered <= set(sink.received)
    assert fwd.report.dead == fwd.report.refused == 0
    assert {s for u, s in states.items() if u not in delivered} == {EntryState.PENDING}

    deadline = time.monotonic() + 30
    while not fwd.down_count:  # the next round: no association (ACSE time-out) -> down
        assert time.monotonic() < deadline, "never marked down"
        time.sleep(fwd.step())
    status = read_status(archive_dir, "dest")
    assert status["failures"] >= 1 and status["down"] and fwd.down_until > time.time() - 1
    assert len(set(sink.received)) == len(delivered)  # nothing got through meanwhile

    proxy.heal()
    while len(set(sink.received)) < 10:
        assert time.monotonic() < deadline, f"{len(set(sink.received))} of 10 arrived"
        time.sleep(fwd.step())
    assert set(sink.received) == set(uids) and len(sink.received) - len(uids) <= 1
    assert read_status(archive_dir, "dest") == {}  # reachable again
    fwd.queue.refresh()
    assert fwd.queue.counts()["pending"] == 0 and fwd.queue.counts()["delivered"] == 10


def test_send_accounts_for_every_file_when_the_link_breaks_mid_write(ct_factory, sink, proxy):
    """A reset while a C-STORE is being written (the fast path's sendmsg fails): every file
    is accounted for (sent, or not sent through the broken link), no thread dies."""
    files = ct_factory.series(20)
    proxy.cut_after(60_000)
    node = parse_node_spec(f"SINK@127.0.0.1:{proxy.port}", Config())
    outcomes = []
    summary = send(node, [SendItem(str(p), p.stat().st_size) for p in files], "PACSCTL",
                   on_outcome=outcomes.append, timeout=TIMEOUT)
    assert proxy.wait_cut(0)
    assert summary.files == 20 and len(outcomes) == 20
    assert 0 < summary.sent < 20
    assert all(o.unreached for o in outcomes if not o.ok)
