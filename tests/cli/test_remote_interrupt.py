"""One Ctrl-C (or SIGTERM) stops `send`, `move` and `get` (issue 10, item 1): nothing new starts,
what is in flight finishes or is aborted within the grace period (~2 s), the summary of what
was done is printed, exit 130, no traceback, no second signal needed.

Real `pacsctl` subprocesses against real pynetdicom peers on loopback; the peers are slowed
down so that the signal lands in the middle of the transfer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import ScpHandlers, ScpOptions, StoreRequest
from tests.cli.test_remote import Peer, peer_factory  # noqa: F401  (fixture)
from tests.helpers import REPO_ROOT, cli_env

GRACE = 2.0  # pacsctl.net.cancel.DEFAULT_GRACE
SLACK = 6.0  # generous: a loaded machine must not fail these


class CountingPeer:
    """A storage SCP that counts arrivals (with their times) and answers each after `delay`."""

    def __init__(self, tmp: Path, delay: float) -> None:
        self.delay = delay
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        (tmp / "peer-tmp").mkdir()
        self.scp: RunningScp = start_scp(
            ScpHandlers(store=self.store),
            ScpOptions(ae_title="RECV", host="127.0.0.1", port=0, temp_dir=tmp / "peer-tmp"))

    def store(self, req: StoreRequest) -> int:
        time.sleep(self.delay)
        with self._lock:
            self.arrivals.append(time.monotonic())
        return 0x0000

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def arrived_after(self, moment: float) -> int:
        with self._lock:
            return sum(1 for t in self.arrivals if t > moment)


@pytest.fixture
def counting_peer(tmp_path: Path) -> Iterator[Callable[[float], CountingPeer]]:
    peers: list[CountingPeer] = []

    def start(delay: float) -> CountingPeer:
        peers.append(CountingPeer(tmp_path, delay))
        return peers[-1]

    yield start
    for peer in peers:
        peer.scp.stop(graceful=False)


def _start_cli(*args: str | os.PathLike[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pacsctl", *map(str, args)], env=cli_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _summary(stdout: str) -> dict[str, Any]:
    records = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert records and records[-1]["type"] == "summary", stdout
    return records[-1]


def _many_files(ct_factory: Any, count: int) -> Path:
    ct_factory.series(count)
    return ct_factory.directory


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_one_signal_stops_send(signum: int, counting_peer: Callable[[float], CountingPeer],
                               ct_factory: Any, archive_dir: Path) -> None:
    peer = counting_peer(0.03)
    folder = _many_files(ct_factory, 200)
    proc = _start_cli("send", f"RECV@127.0.0.1:{peer.scp.port}", folder, "-j", "2", "--json")
    _wait_for(lambda: peer.count >= 20 or proc.poll() is not None, "the first arrivals")
    signalled = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    exited = time.monotonic()

    assert exited - signalled < GRACE + SLACK
    time.sleep(1.0)  # anything still travelling would arrive now
    # In flight at the signal: at most one file per association (two) may still land.
    assert peer.arrived_after(signalled) <= 2, peer.arrived_after(signalled)
    assert proc.returncode == 130, err
    summary = _summary(out)  # what was done, printed after the stop
    assert "Traceback" not in err and "error: send interrupted" in err
    assert summary["interrupted"] is True
    assert summary["sent"] + summary["not_sent"] + summary["failed"] == summary["files"] == 200
    assert summary["failed"] == 0 and summary["not_sent"] > 0
    assert summary["sent"] <= peer.count  # every file counted as sent did arrive


def test_send_aborts_what_the_peer_does_not_answer_in_the_grace_period(
        counting_peer: Callable[[float], CountingPeer], ct_factory: Any, archive_dir: Path) -> None:
    """A peer that takes long to answer the C-STOREs in flight: the associations are aborted
    after the grace period, the command does not wait for the DIMSE time-out (30 s)."""
    peer = counting_peer(0.0)
    folder = _many_files(ct_factory, 60)
    proc = _start_cli("send", f"RECV@127.0.0.1:{peer.scp.port}", folder, "-j", "2", "--json")
    _wait_for(lambda: peer.count >= 10 or proc.poll() is not None, "the first arrivals")
    peer.delay = 20.0  # from now on every store hangs
    time.sleep(0.5)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - signalled < GRACE + SLACK
    assert "Traceback" not in err
    summary = _summary(out)
    assert summary["interrupted"] is True and summary["not_sent"] > 0
    assert summary["sent"] + summary["not_sent"] + summary["failed"] == 60


def _archived_objects(archive: Path) -> int:
    objects = archive / "objects"
    return sum(1 for p in objects.rglob("*") if p.is_file()) if objects.is_dir() else 0


def test_one_signal_stops_get(peer_factory: Callable[..., Peer], ct_factory: Any,  # noqa: F811
                              archive_dir: Path) -> None:
    ct_factory.series(150, patient_id="P1")
    peer = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")))
    proc = _start_cli("get", peer.spec, "-k", "PatientID=P1", "--json")
    _wait_for(lambda: _archived_objects(archive_dir) >= 10 or proc.poll() is not None,
              "the first instances in our archive")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < GRACE + SLACK
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "error: retrieve interrupted" in err
    summary = _summary(out)
    assert summary["interrupted"] is True
    assert 0 < summary["stored"] < 150
    assert summary["stored"] == _archived_objects(archive_dir)  # counted what is there


def test_one_signal_stops_a_move_to_another_node(
        peer_factory: Callable[..., Peer], counting_peer: Callable[[float], CountingPeer],  # noqa: F811
        ct_factory: Any, archive_dir: Path) -> None:
    """The source is asked to stop (C-CANCEL): it sends nothing more to the destination."""
    ct_factory.series(100, patient_id="P1")
    source = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")), aet="SOURCE")
    target = counting_peer(0.05)
    source.add_destination("recv", "RECV", target.scp.port)
    proc = _start_cli("move", source.spec, "--to", "RECV", "-k", "PatientID=P1", "--json")
    _wait_for(lambda: target.count >= 10 or proc.poll() is not None, "the first arrivals")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < GRACE + SLACK
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = _summary(out)
    assert summary["interrupted"] is True
    time.sleep(2.0)
    assert target.arrived_after(signalled + GRACE) == 0
    assert target.count < 100
