"""The socket side of the DICOM listener: pynetdicom's association server, made robust.

- `AcceptorAE`: counts established associations (not open sockets) against the maximum.
- `Server`: TCP_NODELAY on accepted sockets; the TLS handshake off the accept loop; absolute
  deadlines and a cap on open connections that evicts idle unassociated ones rather than refuse
  clients (`net.connections`); adopts a listening socket shared by a node's worker processes
  and, as one of them, leaves a connection to a less busy worker (`net.balance`).
- `bind_listener`: the shared listening socket, made before the workers fork.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from pacsctl.errors import NetworkError
from pacsctl.net.balance import WorkerSlot
from pacsctl.net.connections import Closed, ConnectionTable, connection_of, track

LOG = logging.getLogger(__name__)


class AcceptorAE(AE):
    """pynetdicom counts every accepted TCP connection against `maximum_associations`, so a
    handful of idle sockets that never send an A-ASSOCIATE-RQ would lock real clients out
    until they time out. Count established associations (plus the one asking) instead."""

    @property
    def active_associations(self) -> list[Association]:
        me = threading.current_thread()
        return [a for a in super().active_associations if a.is_established or a is me]


class ConnectionHandler(RequestHandler):
    """pynetdicom's connection handler, which starts the association's thread and returns; for a
    worker that counts its connections (`net.balance`), it waits for that thread to end."""

    def _create_association(self) -> Association:
        self.association = super()._create_association()
        connection = connection_of(self.request)
        if connection is not None:  # its deadlines now look at the association
            connection.assoc = self.association
        return self.association

    def handle(self) -> None:
        super().handle()
        if getattr(self.server, "load", None) is not None:
            self.association.join()
            cast(Server, self.server).count_closed(self.request)


class Server(ThreadedAssociationServer):
    """pynetdicom's server with three fixes: TCP_NODELAY on accepted sockets, the TLS
    handshake moved off the accept loop (a silent client would otherwise block it), and a cap
    on open connections so a flood of idle sockets cannot exhaust threads. As one worker of
    several sharing the socket (`load` set), it leaves connections to less busy workers."""

    max_connections: int = 256
    handshake_timeout: float = 30.0
    connections: ConnectionTable = ConnectionTable(256, 30.0, None)  # replaced by `limit`
    # A request thread may live as long as its association (`ConnectionHandler`): closing the
    # server must not wait for them; `scp.RunningScp.stop` waits for, then aborts, associations.
    block_on_close = False
    daemon_threads = True
    on_refused: Any = None
    adopt_socket: socket.socket | None = None  # set on the class made by `scp.start_scp`
    load: WorkerSlot | None = None  # set with the two below on the class made by `scp.start_scp`
    _counted: set[Any] = set()  # the connections `load` counts as open
    _counted_lock = threading.Lock()

    _looked = False  # whether this pass of the accept loop found a connection pending

    def _handle_request_noblock(self) -> None:
        self._looked = True
        if self.load is not None and not self.load.should_accept():
            self.load.pause()  # a less busy worker takes this connection
            return
        super()._handle_request_noblock()  # type: ignore[misc]

    def service_actions(self) -> None:
        # Called after every pass of `serve_forever`'s loop: a pass that found nothing pending
        # (its poll timed out) tells the balance the socket went quiet.
        if self.load is not None and not self._looked:
            self.load.quiet()
        self._looked = False
        super().service_actions()

    def server_bind(self) -> None:
        if self.adopt_socket is None:
            super().server_bind()
            return
        # Worker processes share one listening socket made before they forked. Non-blocking,
        # so a worker that loses the race for a connection is not stuck in accept().
        if self.socket is not None:
            self.socket.close()
        self.socket = sock = self.adopt_socket
        sock.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self.adopt_socket is None:
            super().server_activate()

    def server_close(self) -> None:
        if self.adopt_socket is None:
            super().server_close()
            return
        # The other workers still listen on it: pynetdicom's shutdown(SHUT_RDWR) would end
        # their listening too, and their accept loops would spin on the dead socket (select
        # reports it ready, accept fails, again). Close this worker's descriptor only.
        assert self.socket is not None
        self.socket.close()

    def limit(
        self,
        max_connections: int,
        acse_timeout: float | None,
        pdu_timeout: float | None,
        on_refused: Any = None,
    ) -> None:
        """Set the connection cap and the deadlines (`net.connections`); `on_refused(address,
        reason)` hears of every connection refused or closed by them."""
        self.max_connections = max_connections
        self.handshake_timeout = acse_timeout or self.handshake_timeout
        self.on_refused = on_refused

        def closed(address: Any, why: Closed) -> None:
            if self.on_refused:
                self.on_refused(address, why.value)

        self.connections = ConnectionTable(max_connections, acse_timeout, pdu_timeout, closed)

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setblocking(True)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        client = track(client, address, self.ssl_context or None)
        if self.load is not None:
            with self._counted_lock:
                self._counted.add(client)
            self.load.opened()
        return client, address

    def count_closed(self, request: Any) -> None:
        """Count a connection closed, once: pynetdicom shuts some down itself when their
        association ends, and `ConnectionHandler` counts each once its association ended."""
        with self._counted_lock:
            if request not in self._counted:
                return
            self._counted.discard(request)
        assert self.load is not None
        self.load.closed()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        connection = connection_of(request)
        if connection is not None and not self.connections.admit(connection):
            LOG.warning(
                "refusing connection from %s: %d associations open", client_address[0], len(self.connections)
            )
            if self.on_refused:
                self.on_refused(client_address, "too many connections")
            return False
        return True

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            self.connections.forget(request)
            self.count_closed(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(self.handshake_timeout)
                request.do_handshake()
            except (OSError, ssl.SSLError) as exc:
                LOG.info("TLS handshake with %s failed: %s", client_address[0], exc)
                if self.on_refused:
                    self.on_refused(client_address, f"TLS handshake failed: {exc}")
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


def bind_listener(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A listening TCP socket, made before worker processes fork so they can share it.
    Raises NetworkError when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise NetworkError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="is another node using the port? choose another port",
        ) from exc
    return sock
