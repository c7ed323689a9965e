"""The connections a listener accepted: absolute deadlines, admission, and what stopping drops.

pynetdicom times a connection with idle timers (socket time-outs, restarted by every byte), so a
peer that trickles one byte a second keeps one open for ever, and enough of them fill the
connection cap before any AE title is checked. Here every connection has absolute deadlines,
enforced by one watchdog thread per listener that shuts the socket down when one passes:

- accept -> A-ASSOCIATE-RQ received and the association established: `acse_timeout`;
- every PDU, from its first byte to its last: `pdu_timeout`.

Admission: at most `per_address` unassociated connections from one address and `limit` in all;
when either is reached the oldest unassociated connection goes, so trickling sockets can never
keep a real client out. On stop, unassociated connections are dropped at once, and established
ones count as in flight only while something moves (`Connection.quiet`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

LOG = logging.getLogger(__name__)

QUIET = 1.0  # seconds without a byte either way (and nothing unanswered): an idle association
_WATCH_EVERY = 0.25  # how often the watchdog looks at the deadlines


class Closed(Enum):
    """Why the listener closed a connection itself."""

    ASSOCIATE_DEADLINE = "did not associate in time"
    PDU_DEADLINE = "a PDU took too long to arrive"
    EVICTED = "evicted: too many unassociated connections"
    STOPPING = "node stopping"


@dataclass(eq=False)
class Connection:
    """One accepted connection and what its deadlines need to know."""

    sock: socket.socket
    address: tuple[Any, ...]
    accepted_at: float = field(default_factory=time.monotonic)
    assoc: Any = None  # the pynetdicom Association, once made
    pdu_started: float | None = None  # first byte of the PDU being received
    last_recv: float = 0.0
    last_send: float = 0.0
    _pdu_left: int = 0
    _header: bytes = b""

    @property
    def host(self) -> str:
        return str(self.address[0])

    @property
    def associated(self) -> bool:
        return self.assoc is not None and bool(self.assoc.is_established)

    @property
    def ended(self) -> bool:
        if self.sock.fileno() == -1:
            return True
        return self.assoc is not None and not self.assoc.is_alive() and self.assoc.ident is not None

    def quiet(self, now: float) -> bool:
        """Nothing moved for `QUIET` s and the last word was ours (no request unanswered)."""
        return now - max(self.last_recv, self.last_send) >= QUIET and self.last_send >= self.last_recv

    def received(self, data: Any, count: int) -> None:
        """Account `count` bytes read into `data`: follow the PDU framing (PS3.8 9.3: type,
        reserved, 4-byte length) to know when a PDU starts and ends."""
        now = time.monotonic()
        self.last_recv = now
        pos = 0
        while pos < count:
            if self._pdu_left:
                take = min(self._pdu_left, count - pos)
                self._pdu_left -= take
                pos += take
                if not self._pdu_left:
                    self.pdu_started = None
                continue
            if not self._header:
                self.pdu_started = now
            take = min(6 - len(self._header), count - pos)
            self._header += bytes(data[pos : pos + take])
            pos += take
            if len(self._header) == 6:
                self._pdu_left = int.from_bytes(self._header[2:6], "big")
                self._header = b""
                if not self._pdu_left:
                    self.pdu_started = None

    def sent(self) -> None:
        self.last_send = time.monotonic()

    def close(self) -> None:
        """Shut the socket down (a blocked recv returns at once); an association not yet
        established is told to end now rather than at its ACSE time-out."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        assoc = self.assoc
        if assoc is not None and not assoc.is_established:
            assoc.dul.kill_dul()
            assoc.dul.to_user_queue.put(None)  # its reactor waits for the A-ASSOCIATE-RQ


class _Tracking:
    """Socket methods that tell the connection what moves (plain and TLS sockets alike)."""

    connection: Connection

    def recv(self, bufsize: int = 1024, flags: int = 0) -> bytes:
        data: bytes = super().recv(bufsize, flags)  # type: ignore[misc]
        self.connection.received(data, len(data))
        return data

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        # Plain sockets read the whole buffer for nbytes 0, TLS ones for None: pass it on as given.
        parent: Any = super()  # socket or SSLSocket: mypy sees neither's recv_into through the mixin
        count: int = parent.recv_into(buffer) if nbytes is None else parent.recv_into(buffer, nbytes, flags)
        self.connection.received(buffer, count)
        return count

    def send(self, data: Any, *args: Any) -> int:
        self.connection.sent()
        return super().send(data, *args)  # type: ignore[misc]

    def sendall(self, data: Any, *args: Any) -> None:
        self.connection.sent()
        super().sendall(data, *args)  # type: ignore[misc]


class TrackedSocket(_Tracking, socket.socket):
    """An accepted plain TCP socket that reports to its `Connection`."""


class TrackedSSLSocket(_Tracking, ssl.SSLSocket):
    """An accepted TLS socket that reports to its `Connection` (`SSLContext.sslsocket_class`)."""


def track(
    client: socket.socket, address: tuple[Any, ...], ssl_context: ssl.SSLContext | None
) -> socket.socket:
    """The accepted `client` as a tracked socket (TLS-wrapped, handshake not done yet)."""
    sock: socket.socket = TrackedSocket(client.family, client.type, client.proto, fileno=client.detach())
    connection = Connection(sock, address)
    sock.connection = connection  # type: ignore[attr-defined]
    if ssl_context is not None:
        ssl_context.sslsocket_class = TrackedSSLSocket
        sock = ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        connection.sock = sock
        sock.connection = connection  # type: ignore[attr-defined]
    return sock


def connection_of(sock: Any) -> Connection | None:
    return getattr(sock, "connection", None)


class ConnectionTable:
    """The open connections of one listener, their deadlines and their admission."""

    def __init__(
        self,
        limit: int,
        acse_timeout: float | None,
        pdu_timeout: float | None,
        on_closed: Callable[[tuple[Any, ...], Closed], None] | None = None,
    ) -> None:
        self.limit = limit
        self.per_address = max(4, limit // 8)
        self.acse_timeout = acse_timeout
        self.pdu_timeout = pdu_timeout
        self.on_closed = on_closed
        self._open: list[Connection] = []  # oldest first
        self._lock = threading.Lock()
        self._watchdog: threading.Thread | None = None
        self._stopped = threading.Event()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def admit(self, connection: Connection) -> bool:
        """Take a new connection, evicting the oldest unassociated one(s) if it would exceed
        a limit; False when every open connection is an association (refuse the new one)."""
        evicted: list[Connection] = []
        with self._lock:
            self._prune()
            waiting = [c for c in self._open if not c.associated]
            same = [c for c in waiting if c.host == connection.host]
            if len(same) >= self.per_address:
                evicted.append(same[0])
            elif len(self._open) >= self.limit:
                if not waiting:
                    return False
                evicted.append(waiting[0])
            for old in evicted:
                self._open.remove(old)
            self._open.append(connection)
        for old in evicted:
            self._close(old, Closed.EVICTED)
        self._start_watchdog()
        return True

    def forget(self, sock: Any) -> None:
        """The connection of `sock` is closed."""
        connection = connection_of(sock)
        if connection is None:
            return
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)

    def drop_unassociated(self) -> int:
        """Close every connection that has not associated (stopping); how many there were."""
        with self._lock:
            waiting = [c for c in self._open if not c.associated]
            for c in waiting:
                self._open.remove(c)
        for c in waiting:
            self._close(c, Closed.STOPPING, audit=False)
        return len(waiting)

    def in_flight(self) -> list[Connection]:
        """Established associations that are moving something (not `quiet`)."""
        now = time.monotonic()
        with self._lock:
            self._prune()
            associated = [c for c in self._open if c.associated]
        if any(t.name.startswith("RequestorThread") for t in threading.enumerate()):
            return associated  # a C-MOVE is sending: its association looks quiet, it is not
        return [c for c in associated if not c.quiet(now)]

    def close(self) -> None:
        """Stop the watchdog."""
        self._stopped.set()

    def _prune(self) -> None:
        self._open = [c for c in self._open if not c.ended]

    def _close(self, connection: Connection, why: Closed, audit: bool = True) -> None:
        LOG.info("closing connection from %s: %s", connection.host, why.value)
        connection.close()
        if audit and self.on_closed is not None:
            self.on_closed(connection.address, why)

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="pacsctl-deadlines", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        while not self._stopped.wait(_WATCH_EVERY):
            now = time.monotonic()
            late: list[tuple[Connection, Closed]] = []
            with self._lock:
                self._prune()
                for c in self._open:
                    why = self._overdue(c, now)
                    if why is not None:
                        late.append((c, why))
                for c, _ in late:
                    self._open.remove(c)
            for c, why in late:
                self._close(c, why)

    def _overdue(self, c: Connection, now: float) -> Closed | None:
        if self.acse_timeout is not None and not c.associated and now - c.accepted_at > self.acse_timeout:
            return Closed.ASSOCIATE_DEADLINE
        if (
            self.pdu_timeout is not None
            and c.pdu_started is not None
            and now - c.pdu_started > self.pdu_timeout
        ):
            return Closed.PDU_DEADLINE
        return None
