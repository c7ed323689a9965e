"""Network failures are named: each real socket situation on loopback gives its own one-line
error with a hint, exit 4, from a typed `NetworkFailure` (issue 10, item 5)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacsctl.config import Node
from pacsctl.errors import NetworkError, NetworkFailure
from pacsctl.net import scu
from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import ScpHandlers, ScpOptions
from tests.helpers import free_port, run_cli


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    sock.close()


@pytest.fixture
def picky_scp() -> Iterator[RunningScp]:
    """A plain pynetdicom listener, AE title PICKY, that takes associations from FRIEND only."""
    scp = start_scp(ScpHandlers(), ScpOptions(ae_title="PICKY", host="127.0.0.1", port=0,
                                              allow=["FRIEND"]))
    yield scp
    scp.stop(graceful=False)


def _one_line_error(proc) -> tuple[str, str]:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    hints = [ln for ln in lines if ln.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, proc.stderr
    return errors[0], hints[0]


def test_five_failures_are_five_errors_each_with_a_hint(
        silent_port: int, picky_scp: RunningScp, archive_dir: Path) -> None:
    closed = free_port()
    cases = {
        "refused": run_cli("echo", f"NOBODY@127.0.0.1:{closed}", "--timeout", "5"),
        "timeout": run_cli("echo", f"SILENT@127.0.0.1:{silent_port}", "--timeout", "2"),
        "dns": run_cli("echo", "SOMEONE@nosuch.invalid:104", "--timeout", "5"),
        "rejected": run_cli("echo", f"PICKY@127.0.0.1:{picky_scp.port}", "--aet", "STRANGER"),
    }
    added = run_cli("nodes", "add", "tlsnode", "--aet", "PICKY", "--host", "127.0.0.1",
                    "--port", str(picky_scp.port), "--tls")
    assert added.returncode == 0, added.stderr
    cases["tls"] = run_cli("echo", "tlsnode", "--aet", "FRIEND", "--timeout", "5")
    found = {name: _one_line_error(proc) for name, proc in cases.items()}
    errors = {name: error for name, (error, _) in found.items()}
    assert len(set(errors.values())) == 5
    assert f"refused the connection (nothing listens on port {closed})" in errors["refused"]
    assert "did not answer the association request within 2 s" in errors["timeout"]
    assert "--timeout" in found["timeout"][1]  # the CLI names its flag
    assert "cannot resolve the host name 'nosuch.invalid'" in errors["dns"]
    assert "TLS handshake with PICKY@127.0.0.1" in errors["tls"]
    assert "rejected the association: Calling AE title not recognised" in errors["rejected"]
    assert "source: Service User" in errors["rejected"]
    assert "STRANGER" in found["rejected"][1]  # the hint names our AE title to add
    assert len({hint for _, hint in found.values()}) == 5


def test_failures_carry_their_kind(silent_port: int, picky_scp: RunningScp) -> None:
    """The kind is a typed field, set from socket and DICOM events (not from message text)."""
    def kind(node: Node, **kwargs) -> NetworkFailure | None:
        with pytest.raises(NetworkError) as err:
            scu.echo(node, **kwargs)
        return err.value.failure

    assert kind(Node("n", "X", "127.0.0.1", free_port()), timeout=5) is NetworkFailure.REFUSED
    assert kind(Node("n", "X", "127.0.0.1", silent_port), timeout=1) is NetworkFailure.TIMEOUT
    assert kind(Node("n", "X", "nosuch.invalid", 104)) is NetworkFailure.DNS
    assert kind(Node("n", "PICKY", "127.0.0.1", picky_scp.port, tls=True),
                calling_aet="FRIEND", timeout=5) is NetworkFailure.TLS
    assert kind(Node("n", "PICKY", "127.0.0.1", picky_scp.port),
                calling_aet="STRANGER") is NetworkFailure.REJECTED
    assert kind(Node("n", "WRONG", "127.0.0.1", picky_scp.port),
                calling_aet="FRIEND") is NetworkFailure.REJECTED


def test_a_peer_that_closes_at_once_is_not_a_timeout() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def close_each() -> None:
        for _ in range(2):
            try:
                sock.accept()[0].close()
            except OSError:  # the test closed the socket: no second connection came
                return

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    try:
        with pytest.raises(NetworkError) as err:
            scu.echo(Node("n", "X", "127.0.0.1", sock.getsockname()[1]), timeout=20)
        assert err.value.failure is NetworkFailure.ABORTED
        assert "closed the connection" in str(err.value)
    finally:
        sock.close()


def test_node_without_port_says_the_port_is_missing(archive_dir: Path) -> None:
    for spec in ("ORTHANC@10.0.0.5", "ORTHANC@10.0.0.5:"):
        proc = run_cli("echo", spec)
        assert proc.returncode == 2
        assert f"error: no port in '{spec}'" in proc.stderr and "AET@host:PORT" in proc.stderr


@pytest.mark.parametrize("command", [["send"], ["query"], ["get", "-k", "PatientID=P1"],
                                     ["move", "--to", "X", "-k", "PatientID=P1"]])
def test_every_network_command_names_the_failure(command: list[str], ct_factory, archive_dir: Path) -> None:
    port = free_port()
    args = [command[0], f"NOBODY@127.0.0.1:{port}", *command[1:]]
    if command[0] == "send":
        args.append(str(ct_factory()))
    error, hint = _one_line_error(run_cli(*args, "--timeout", "5"))
    assert f"refused the connection (nothing listens on port {port})" in error
