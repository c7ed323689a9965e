"""TLS listeners and hostile input: the node keeps answering whatever arrives on its port."""

from __future__ import annotations

import socket
import time

import pytest

from pacsctl.config import Node
from pacsctl.errors import NetworkError
from pacsctl.net import scu
from tests.helpers import TESTDATA_DIR
from tests.net.conftest import server_tls


def _tls_node(s, material, cert="client", ca=True) -> Node:
    return Node("t", s.node.aet, "127.0.0.1", s.scp.port, tls=True,
                tls_cert=material.get(f"{cert}_cert") if cert else None,
                tls_key=material.get(f"{cert}_key") if cert else None,
                tls_ca=material["ca"] if ca else None)


def test_tls_echo_and_store(serve, tls_material):
    s = serve(tls=server_tls(tls_material))
    node = _tls_node(s, tls_material)
    assert scu.echo(node) >= 0
    assert all(r.ok for r in scu.store(node, [TESTDATA_DIR / "CT_small.dcm"]))


def test_tls_listener_refuses_plain_tcp(serve, tls_material):
    s = serve(tls=server_tls(tls_material))
    with pytest.raises(NetworkError):
        scu.echo(Node("t", s.node.aet, "127.0.0.1", s.scp.port), timeout=3)
    assert scu.echo(_tls_node(s, tls_material)) >= 0  # still serving


def test_tls_requires_client_certificate_from_ca(serve, tls_material):
    s = serve(tls=server_tls(tls_material, require_client=True))
    with pytest.raises(NetworkError):
        scu.echo(_tls_node(s, tls_material, cert=None), timeout=3)
    with pytest.raises(NetworkError):
        scu.echo(_tls_node(s, tls_material, cert="rogue"), timeout=3)
    assert scu.echo(_tls_node(s, tls_material)) >= 0


def test_silent_tls_client_does_not_block_accepting(serve, tls_material):
    """A client that connects and never starts the handshake must not wedge the accept loop."""
    s = serve(tls=server_tls(tls_material))
    with socket.create_connection(("127.0.0.1", s.scp.port)):
        assert scu.echo(_tls_node(s, tls_material), timeout=5) >= 0


def _send_raw(port: int, payload: bytes, wait: float = 0.5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        sock.settimeout(wait)
        try:
            return sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return b""


@pytest.mark.parametrize("payload", [
    b"\x00" * 64,
    b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n",
    bytes(range(256)) * 8,
    b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 32,  # A-ASSOCIATE-RQ claiming a 4 GB PDU, then EOF
    b"\x04\x00\x00\x00\x00\x10\x00\x00",  # P-DATA before any association
    b"\x01\x00\x00\x00\x00\x04\x00\x01",  # truncated A-ASSOCIATE-RQ
], ids=["zeros", "http", "noise", "oversized", "pdata-first", "truncated"])
def test_garbage_then_echo_still_works(serve, payload):
    s = serve(acse_timeout=2, network_timeout=2)
    _send_raw(s.scp.port, payload)
    assert scu.echo(s.node) >= 0


def test_idle_connections_time_out_and_never_block(serve):
    s = serve(acse_timeout=1, network_timeout=1, max_associations=4)
    idle = [socket.create_connection(("127.0.0.1", s.scp.port)) for _ in range(30)]
    try:
        assert scu.echo(s.node) >= 0  # served while 30 idle sockets are open
        time.sleep(2.5)
        closed = 0
        for sock in idle:  # the node hung up on each of them
            sock.settimeout(3)
            try:
                closed += sock.recv(16) == b""
            except OSError:
                closed += 1
        assert closed == len(idle)
    finally:
        for sock in idle:
            sock.close()
    assert scu.echo(s.node) >= 0


def test_max_associations_rejects_the_extra_one(serve):
    s = serve(max_associations=1)
    from pynetdicom.sop_class import Verification
    from pynetdicom.presentation import build_context

    with scu.associate(s.node, [build_context(Verification)]):
        with pytest.raises(NetworkError, match="rejected"):
            scu.echo(s.node)
    assert scu.echo(s.node) >= 0
