"""Spread a node's associations over its worker processes: the least busy worker accepts.

The workers share one listening socket, and every one of them wakes for a new connection;
whichever calls accept() first gets it. Left to that race, four associations landed 3 + 1 on
two workers in half of the runs measured here (`ss -tnp` during `bench_serve.py`): the worker
with three is held to one core by its GIL while the other idles. Instead, each worker counts
its open connections in memory shared by all of them, and leaves a connection to a worker with
fewer. Should that worker not take it within `PATIENCE` seconds (wedged, or just replaced),
the busier one takes it after all: a connection is never left waiting.

The wait ends only when this worker accepts, or its accept loop finds the socket quiet
(`quiet()`: a poll with nothing pending, so the connection went to another worker). It once also
ended after a 10 ms gap between two looks, taken for quiet; on a loaded machine every gap was
longer, each look started the wait anew, and a busier worker left a connection for good to a
less busy one that was stopped (SIGSTOP, or wedged): nobody answered it.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import time

PATIENCE = 0.2  # seconds a connection waits for a less busy worker to accept it
_PAUSE = 0.001  # how long a worker that leaves a connection to another waits before looking again


class SharedLoad:
    """Open connections per worker, in anonymous shared memory: make it before forking."""

    def __init__(self, workers: int) -> None:
        self._memory = mmap.mmap(-1, 8 * max(1, workers))  # MAP_SHARED: seen by forked workers
        self.counts = (ctypes.c_int64 * max(1, workers)).from_buffer(self._memory)

    def slot(self, index: int) -> WorkerSlot:
        """The load of worker `index` (a fresh worker starts with no connections)."""
        self.counts[index] = 0
        return WorkerSlot(self, index)


class WorkerSlot:
    """One worker's view: count its own connections, and decide whether to accept the next."""

    def __init__(self, load: SharedLoad, index: int) -> None:
        self._counts = load.counts
        self._index = index
        self._lock = threading.Lock()  # accept loop and association threads both update it
        self._declining_since: float | None = None  # when this worker began leaving a connection

    def opened(self) -> None:
        with self._lock:
            self._counts[self._index] += 1

    def closed(self) -> None:
        with self._lock:
            self._counts[self._index] -= 1

    def should_accept(self, now: float | None = None) -> bool:
        """Whether this worker should accept the pending connection now. When not, the caller
        waits `pause()` and asks again (the connection stays queued for the others)."""
        now = time.monotonic() if now is None else now
        mine = self._counts[self._index]
        if all(mine <= other for other in self._counts):
            self._declining_since = None
            return True
        if self._declining_since is None:
            self._declining_since = now
        return now - self._declining_since >= PATIENCE

    def quiet(self) -> None:
        """The accept loop found no connection pending: the next one starts a new wait."""
        self._declining_since = None

    @staticmethod
    def pause() -> None:
        time.sleep(_PAUSE)
