"""Absolute deadlines and admission (`net.connections`): peers that trickle bytes on loopback
can neither hold a connection past its deadline nor keep real clients out."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacsctl.net import scu

# An A-ASSOCIATE-RQ header announcing 200 bytes that will come one at a time.
_ASSOCIATE_START = b"\x01\x00\x00\x00\x00\xc8"


def _closed_by_peer(sock: socket.socket) -> bool:
    """True once the other side has closed (EOF or reset) — without blocking."""
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


class Trickler:
    """Sockets that send `start`, then one more byte every `every` seconds, until closed."""

    def __init__(self, port: int, count: int, start: bytes = _ASSOCIATE_START,
                 source: str = "127.0.0.1", every: float = 0.2) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(start)
            self.socks.append(sock)
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            for sock in self.socks:
                try:
                    sock.send(b"\x00")
                except OSError:
                    pass

    def open(self) -> list[socket.socket]:
        return [s for s in self.socks if not _closed_by_peer(s)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks:
            sock.close()


@pytest.fixture
def trickle() -> Iterator:
    made: list[Trickler] = []

    def start(*args, **kwargs) -> Trickler:
        made.append(Trickler(*args, **kwargs))
        return made[-1]

    yield start
    for t in made:
        t.close()


def _wait_until(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_a_trickled_associate_request_is_cut_at_the_acse_deadline(serve, trickle):
    """One byte every 0.2 s restarted pynetdicom's idle timer for ever (issue 10 item 15)."""
    s = serve(acse_timeout=1, network_timeout=30, dimse_timeout=30)
    t = trickle(s.scp.port, 1)
    assert _wait_until(lambda: not t.open(), 8), "still open while trickling"
    assert scu.echo(s.node) >= 0


def test_a_trickled_pdu_is_cut_at_its_deadline(serve):
    """Associated, then a P-DATA-TF trickled byte by byte: cut `network_timeout` after its
    first byte, not kept alive by each byte."""
    s = serve(acse_timeout=30, network_timeout=1, dimse_timeout=30)
    ae = AE(ae_title="TRICKLE")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", s.scp.port, ae_title=s.node.aet)
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    stop = threading.Event()

    def trickling() -> None:
        raw.sendall(b"\x04\x00\x00\x00\x01\x00")  # P-DATA-TF of 256 bytes
        while not stop.wait(0.2):
            try:
                raw.send(b"\x00")
            except OSError:
                return

    thread = threading.Thread(target=trickling, daemon=True)
    thread.start()
    try:
        assert _wait_until(lambda: not assoc.is_alive() or assoc.is_aborted, 8)
    finally:
        stop.set()
        thread.join(5)
        assoc.abort()
    assert scu.echo(s.node) >= 0


def test_tricklers_from_one_address_cannot_fill_the_cap(serve, trickle):
    """40 trickling sockets from 127.0.0.2 against a cap of 16: that address keeps only its
    own few; a real client is served."""
    s = serve(acse_timeout=30, network_timeout=30, max_associations=4)
    t = trickle(s.scp.port, 40, source="127.0.0.2")
    assert _wait_until(lambda: len(t.open()) <= 4, 5), f"{len(t.open())} open"
    assert scu.echo(s.node, timeout=5) >= 0


def test_tricklers_from_many_addresses_are_evicted_for_a_real_client(serve, trickle):
    """The cap is full of unassociated connections from several addresses: the oldest goes,
    the new client is served (it was refused before)."""
    s = serve(acse_timeout=30, network_timeout=30, max_associations=4)
    ts = [trickle(s.scp.port, 4, source=f"127.0.0.{n}") for n in range(2, 7)]  # 20 > 16
    time.sleep(0.5)
    for _ in range(3):
        assert scu.echo(s.node, timeout=5) >= 0
    assert sum(len(t.open()) for t in ts) <= 16
    assert any(r["event"] == "refuse" and "evicted" in r["reason"] for r in s.archive.audit)


def test_a_real_client_still_associates_alongside_tricklers(serve, trickle):
    """Eviction takes the oldest unassociated connection, never an established association."""
    s = serve(acse_timeout=30, network_timeout=30, max_associations=4)
    ae = AE(ae_title="REAL")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", s.scp.port, ae_title=s.node.aet)
    assert assoc.is_established
    try:
        trickle(s.scp.port, 30, source="127.0.0.3")
        time.sleep(0.5)
        assert assoc.is_established and assoc.send_c_echo().Status == 0
    finally:
        assoc.release()
