"""When each of a node's child processes last showed it is alive: a monotonic timestamp per
child in memory shared with the forked children (an anonymous shared mmap made before the fork).
The supervisor reads how long a child has been silent; a silent child cannot run Python."""

from __future__ import annotations

import ctypes
import mmap
import threading
import time

BEAT = 0.2  # seconds between a live child's beats


class Heartbeats:
    """When each child last beat (monotonic clock, shared with the forked children)."""

    def __init__(self, children: int) -> None:
        self._memory = mmap.mmap(-1, 8 * children)
        self._beats = (ctypes.c_double * children).from_buffer(self._memory)

    def beat(self, index: int) -> None:
        self._beats[index] = time.monotonic()

    def silent_for(self, index: int) -> float:
        return time.monotonic() - self._beats[index]

    def keep_beating(self, index: int, until: threading.Event | None = None) -> None:
        """In the child: beat from a daemon thread for as long as the process can run Python
        (or until `until` is set: the child beats from elsewhere from then on)."""

        def run() -> None:
            while until is None or not until.is_set():
                self.beat(index)
                time.sleep(BEAT)

        threading.Thread(target=run, name="pacsctl-heartbeat", daemon=True).start()
