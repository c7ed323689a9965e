"""Stopping SCU work on request (Ctrl-C, SIGTERM): no new message starts, what is in flight
gets a short grace period to finish, then its association is aborted (A-ABORT).

`Cancellation.cancel()` only sets an event, so a signal handler may call it; a watchdog thread
started beforehand does the network side (C-CANCEL callbacks, the aborts), never the handler.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no pynetdicom at import: the CLI imports this before any command runs
    from pynetdicom.association import Association

LOG = logging.getLogger(__name__)

DEFAULT_GRACE = 2.0  # seconds an in-flight message gets to finish after a stop request


class Cancellation:
    """A stop request shared by every thread and association of one operation."""

    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self._requested = threading.Event()
        self._forced = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[int, tuple[Association, Callable[[], None] | None]] = {}
        self._watchdog = threading.Thread(target=self._watch, name="pacsctl-cancel", daemon=True)
        self._watchdog.start()

    @property
    def requested(self) -> bool:
        """True once a stop was requested: start nothing new."""
        return self._requested.is_set()

    def cancel(self) -> None:
        """Request a stop (signal-safe: sets an event, nothing else)."""
        self._requested.set()

    def force(self) -> None:
        """Request a stop without the grace period (a second Ctrl-C)."""
        self._forced.set()
        self._requested.set()

    @contextmanager
    def watching(self, assoc: Association, on_cancel: Callable[[], None] | None = None) -> Iterator[None]:
        """Within the block, a stop request calls `on_cancel` (e.g. send a C-CANCEL), and
        aborts `assoc` if it is still open once the grace period is over."""
        key = id(assoc)
        with self._lock:
            self._open[key] = (assoc, on_cancel)
        try:
            yield
        finally:
            with self._lock:
                self._open.pop(key, None)

    def _watch(self) -> None:
        self._requested.wait()
        with self._lock:
            callbacks = [cb for _, cb in self._open.values() if cb is not None]
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # the abort below still stops it
                LOG.debug("cancel callback failed: %s", type(exc).__name__)
        self._forced.wait(self.grace)
        with self._lock:
            still_open = [assoc for assoc, _ in self._open.values()]
        for assoc in still_open:
            if assoc.is_established:
                LOG.info("aborting an association still busy %.0f s after the stop request", self.grace)
                assoc.abort()
                # A local abort leaves a request waiting for its response until the DIMSE
                # time-out; pynetdicom wakes it this way when the peer closes the connection.
                assoc.dimse.msg_queue.put((None, None))
