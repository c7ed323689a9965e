"""The signals a serving node obeys: SIGTERM and SIGINT stop it, SIGHUP reloads its settings.

No Python signal handler runs. The signals are blocked in every thread of the process (and in
the workers it forks, which inherit the mask) and taken with sigtimedwait() by whoever waits
for them. A handler that sets a `threading.Event` deadlocks when a second signal arrives while
the first one is inside `Event.set()` (its lock is not re-entrant): Ctrl-C reaches every process
of the group and the supervisor then sends SIGTERM, and about one worker stop in twenty hung
for good that way.
"""

from __future__ import annotations

import enum
import signal
from types import TracebackType

_STOP = (signal.SIGTERM, signal.SIGINT)
_TAKEN = {*_STOP, signal.SIGHUP}


class NodeSignal(enum.Enum):
    """What a received signal asks of the node."""

    STOP = "stop"
    RELOAD = "reload"


class NodeSignals:
    """Blocks SIGTERM, SIGINT and SIGHUP while in use (`with NodeSignals() as signals:`), so
    that `wait` receives them; enter it before starting threads or forking workers."""

    def __init__(self) -> None:
        self._previous: set[int | signal.Signals] | None = None

    def __enter__(self) -> NodeSignals:
        self._previous = signal.pthread_sigmask(signal.SIG_BLOCK, _TAKEN)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Take what is still pending first: unblocked, a SIGHUP would end the process and a
        # SIGINT would raise KeyboardInterrupt in whatever runs next.
        while self.wait(0) is not None:
            pass
        if self._previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous)

    @staticmethod
    def wait(timeout: float) -> NodeSignal | None:
        """The next signal received within `timeout` seconds (0: only one already pending)."""
        info = signal.sigtimedwait(_TAKEN, max(0.0, timeout))
        if info is None:
            return None
        return NodeSignal.STOP if info.si_signo in _STOP else NodeSignal.RELOAD
