"""The forwarder running with `pacsctl serve`: what arrives is forwarded; after `kill -9` of
the node with a full outbox, everything still arrives once it runs again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pacsctl.archive.archive import Archive
from pacsctl.config import Config, parse_node_spec
from pacsctl.remote.send import SendItem, send
from pacsctl.routing.routes import add_route, route_status


def _send(server, paths: list[Path]) -> None:
    node = parse_node_spec(f"{server.aet}@127.0.0.1:{server.port}", Config())
    summary = send(node, [SendItem(str(p), p.stat().st_size) for p in paths],
                   "MODALITY")
    assert summary.sent == len(paths), summary.failures


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_serve_forwards_what_it_receives(archive_dir, ct_factory, serve_factory, sink):
    server = serve_factory(archive_dir, "--workers", "2")
    # added while the node runs: `route add` SIGHUPs it, each worker reloads its routes
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", sink.spec)
    _wait_for(lambda: server.stderr().count("SIGHUP: settings reloaded") >= 2)
    files = ct_factory.series(10)
    _send(server, files)
    _wait_for(lambda: len(sink.received) >= 10)
    assert server.stop() == 0
    assert len(sink.received) == 10 and len(set(sink.received)) == 10


def test_kill_9_with_a_full_outbox_loses_no_forward(archive_dir, ct_factory, serve_factory, stopped_sink):
    with Archive.open(archive_dir) as archive:
        add_route(archive, "dest", stopped_sink.spec, max_backoff=1.0)
    server = serve_factory(archive_dir)
    files = ct_factory.series(20)
    _send(server, files)  # acknowledged: each one's forward is durable by then
    with Archive.open(archive_dir) as archive:
        assert route_status(archive)[0][0]["pending"] == 20
    assert server.kill() == -9  # the forwarder dies with it (parent-death signal)
    stopped_sink.start()
    time.sleep(1.5)
    assert stopped_sink.received == []  # nobody forwards while no node runs
    server = serve_factory(archive_dir)
    _wait_for(lambda: len(stopped_sink.received) >= 20)
    assert server.stop() == 0
    assert sorted(set(stopped_sink.received)) == sorted(stopped_sink.received)  # none twice
    assert len(stopped_sink.received) == 20
    with Archive.open(archive_dir) as archive:
        row = route_status(archive)[0][0]
    assert (row["pending"], row["delivered"]) == (0, 20)
