"""A real TCP proxy on loopback that breaks the network on command (tests only).

    with NetProxy(("127.0.0.1", port)) as proxy:   # proxy.port, proxy.url
        proxy.cut_after(200_000)   # the link breaks once 200 kB more went through (up + down):
                                   # every connection is reset, new ones are reset at once
        proxy.wait_cut(30)         # the cut has happened
        proxy.heal()               # the link is back: new connections go through again
        proxy.blackhole()          # nothing is forwarded any more, no connection is closed
                                   # (new ones are accepted and left hanging): a dead link
        proxy.blackhole_after(n)   # the same once n more bytes went through

Plain sockets and threads, one thread per connection. It stops by itself after `lifetime`
seconds (a test that forgets it cannot leave it running), and every wait in it is bounded.
`cut_after(..., stay_down=False)` breaks the connections once and lets new ones through (a
transient fault a client's retries should ride out).
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from enum import Enum
from types import TracebackType

TICK = 0.05  # how often idle threads look at the state


class LinkState(Enum):
    UP = "up"  # forwarding
    CUT = "cut"  # every connection reset, new ones too
    BLACKHOLE = "blackhole"  # nothing forwarded, nothing closed


class NetProxy:
    """Listens on 127.0.0.1 (a free port) and forwards every connection to `target`."""

    def __init__(self, target: tuple[str, int], lifetime: float = 300.0) -> None:
        self.target = target
        self.lifetime = lifetime
        self.state = LinkState.UP
        self.connections = 0  # accepted so far
        self.forwarded = 0  # bytes, both directions
        self.cuts = 0  # connections reset by a cut
        self._budget: int | None = None  # bytes left before the armed cut
        self._stay_down = True
        self._then = LinkState.CUT  # what the armed budget does when spent
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(TICK)
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- commands ----

    def cut_after(self, nbytes: int, stay_down: bool = True) -> None:
        """Break the link once `nbytes` more bytes went through (0: now)."""
        self._arm(nbytes, LinkState.CUT, stay_down)

    def blackhole_after(self, nbytes: int) -> None:
        """Let the link go silent once `nbytes` more bytes went through (0: now)."""
        self._arm(nbytes, LinkState.BLACKHOLE, True)

    def blackhole(self) -> None:
        """Stop forwarding without closing anything (a link that went dead silently)."""
        self.blackhole_after(0)

    def heal(self) -> None:
        """Forward again. Connections held in a blackhole are reset (their clients gave up on
        them long ago; stale bytes must not reach the target late); a cut's stay gone."""
        with self._lock:
            self._budget = None
            if self.state is LinkState.BLACKHOLE:
                self._reset_all()
            self.state = LinkState.UP

    def _arm(self, nbytes: int, then: LinkState, stay_down: bool) -> None:
        with self._lock:
            self._cut.clear()
            self._then, self._stay_down = then, stay_down
            self._budget = nbytes
            if nbytes <= 0:
                self._break()

    def wait_cut(self, timeout: float) -> bool:
        """Whether the armed fault (cut or blackhole) happened within `timeout` seconds."""
        return self._cut.wait(timeout)

    # ---- life ----

    def start(self) -> NetProxy:
        self._deadline = time.monotonic() + self.lifetime
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        with self._lock:
            for client, upstream in self._pairs:
                _close(client)
                if upstream is not None:
                    _close(upstream)

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- inside ----

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="netproxy")  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _stopping(self) -> bool:
        return self._stop.is_set() or time.monotonic() > self._deadline

    def _accept_loop(self) -> None:
        while not self._stopping():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with self._lock:
                state = self.state
            if state is LinkState.CUT:
                _reset(client)
                continue
            self._spawn(self._relay, client)

    def _relay(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        pair: tuple[socket.socket, socket.socket | None] = (client, None)
        with self._lock:
            self._pairs.append(pair)
        try:
            while self.state is LinkState.BLACKHOLE and not self._stopping():
                time.sleep(TICK)  # a dead link: the connection hangs, nothing is forwarded
            if self._stopping() or self.state is LinkState.CUT:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            with self._lock:
                self._pairs.remove(pair)
                pair = (client, upstream)
                self._pairs.append(pair)
                if self.state is LinkState.CUT:
                    return
            peer = {client: upstream, upstream: client}
            while not self._stopping():
                if self.state is LinkState.BLACKHOLE:
                    time.sleep(TICK)
                    continue
                try:
                    ready, _, _ = select.select([client, upstream], [], [], TICK)
                except (OSError, ValueError):  # closed by a cut
                    return
                for sock in ready:
                    if not self._forward(sock, peer[sock]):
                        return
        except OSError:
            return
        finally:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            _close(client)
            if upstream is not None:
                _close(upstream)

    def _forward(self, source: socket.socket, sink: socket.socket) -> bool:
        """Pass one chunk on, never more than the armed cut allows; False when done."""
        with self._lock:
            if self.state is not LinkState.UP:
                return self.state is LinkState.BLACKHOLE
            limit = 65536 if self._budget is None else max(1, min(65536, self._budget))
        data = source.recv(limit)
        if not data:
            return False
        with self._lock:
            if self.state is not LinkState.UP:
                return self.state is LinkState.BLACKHOLE  # dropped: the link died meanwhile
            sink.sendall(data)
            self.forwarded += len(data)
            if self._budget is not None:
                self._budget -= len(data)
                if self._budget <= 0:
                    self._break()
                    return self.state is LinkState.BLACKHOLE  # held open, silent
        return True

    def _break(self) -> None:
        """The armed fault happens (under the lock)."""
        self._budget = None
        if self._then is LinkState.BLACKHOLE:
            self.state = LinkState.BLACKHOLE
        else:
            self.state = LinkState.CUT if self._stay_down else LinkState.UP
            self._reset_all()
        self._cut.set()

    def _reset_all(self) -> None:
        for client, upstream in self._pairs:
            self.cuts += 1
            _reset(client)
            if upstream is not None:
                _reset(upstream)


def _reset(sock: socket.socket) -> None:
    """Close with an RST, as a broken link looks to the far side (no orderly FIN)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
