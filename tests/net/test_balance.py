"""Associations spread over a node's workers: the least busy worker accepts (`net.balance`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacsctl.net.balance import PATIENCE, SharedLoad
from pacsctl.net.scp import start_scp
from pacsctl.net.types import ScpHandlers, ScpOptions
from tests.helpers import serve_workers


def test_a_busier_worker_leaves_the_connection_to_a_less_busy_one() -> None:
    load = SharedLoad(2)
    first, second = load.slot(0), load.slot(1)
    first.opened()
    assert not first.should_accept(now=100.0)
    assert second.should_accept(now=100.0)
    second.opened()
    assert first.should_accept(now=100.0)  # a tie: either may take it
    first.opened()
    first.closed()
    second.closed()
    assert list(load.counts) == [1, 0]


def test_a_connection_never_waits_longer_than_the_patience() -> None:
    """If the less busy worker does not take it (wedged, being replaced), the busy one does."""
    load = SharedLoad(2)
    busy = load.slot(0)
    load.slot(1)
    busy.opened()
    now = 100.0
    while not busy.should_accept(now=now):
        now += 0.001  # the accept loop looks again after each pause
    assert PATIENCE <= now - 100.0 < PATIENCE + 0.01
    busy.quiet()  # the accept loop found nothing pending: the next connection starts a new wait
    assert not busy.should_accept(now=now + 1.0)


def test_a_loaded_accept_loop_still_takes_the_connection_after_the_patience() -> None:
    """On a loaded machine the accept loop looks again 50 ms later, not 1 ms. Each such gap
    once counted as a new connection and restarted the wait: the busier worker left the
    connection for good to an idle worker that was stopped, and nobody answered it."""
    load = SharedLoad(2)
    busy = load.slot(0)
    load.slot(1)  # the less busy worker, which never takes it (SIGSTOPped)
    busy.opened()
    now = 100.0
    while not busy.should_accept(now=now):
        now += 0.05
        assert now < 110.0, "the busier worker never took the connection"
    assert PATIENCE <= now - 100.0 < PATIENCE + 0.06


def test_the_counts_are_shared_with_forked_workers() -> None:
    load = SharedLoad(2)
    pid = os.fork()
    if pid == 0:
        slot = load.slot(1)
        slot.opened()
        slot.opened()
        os._exit(0)
    os.waitpid(pid, 0)
    assert list(load.counts) == [0, 2]


def _connections_per_worker(server_pid: int, port: int) -> list[int]:
    """Established connections on `port` held by each worker process of `server_pid`."""
    workers = serve_workers(server_pid)
    inodes: dict[str, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # ESTABLISHED
            inodes[fields[9]] = local_port
    counts = []
    for pid in workers:
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held += 1
        counts.append(held)
    return sorted(counts)


def test_four_associations_land_two_on_each_of_two_workers(serve_factory, archive_dir) -> None:
    """Left to the accept race, 3 + 1 came up in half the runs; balanced, always 2 + 2."""
    srv = serve_factory(archive_dir, "--workers", "2")
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    for _ in range(3):
        assocs = []
        try:
            for _ in range(4):
                assoc = ae.associate("127.0.0.1", srv.port, ae_title=srv.aet)
                assert assoc.is_established
                assocs.append(assoc)
            assert _connections_per_worker(srv.process.proc.pid, srv.port) == [2, 2]
        finally:
            for assoc in assocs:
                assoc.release()
        # A worker counts a connection as closed once its association thread ended.
        deadline = time.monotonic() + 10
        while _connections_per_worker(srv.process.proc.pid, srv.port) != [0, 0]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)


def test_stopping_a_counting_worker_does_not_wait_for_an_idle_association() -> None:
    """A worker's connection threads wait for their associations; stopping must not: after the
    grace period, what is still open is aborted."""
    scp = start_scp(ScpHandlers(), ScpOptions(ae_title="NODE", host="127.0.0.1", port=0),
                    load=SharedLoad(1).slot(0))
    ae = AE(ae_title="IDLE")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="NODE")
    assert assoc.is_established
    started = time.monotonic()
    assert scp.stop(graceful=True, timeout=0.5) is False  # the idle association was aborted
    assert time.monotonic() - started < 5
    assoc.abort()
