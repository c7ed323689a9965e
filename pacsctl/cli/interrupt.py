"""Ctrl-C and SIGTERM for the commands that talk to other nodes (`send`, `move`, `get`).

The first signal requests a stop: nothing new starts, what is in flight gets a grace period
to finish, then its association is aborted, and the command prints what was done and exits
130. A second signal aborts at once. The handler only sets events (`Cancellation`); the work
threads and a watchdog act on them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from pacsctl.net.cancel import DEFAULT_GRACE, Cancellation

_STOPPING = b"stopping: letting what is in flight finish for up to %d s (Ctrl-C again to abort at once)\n"


@contextmanager
def stop_on_signals(grace: float = DEFAULT_GRACE) -> Iterator[Cancellation]:
    """Within the block, SIGINT and SIGTERM request a stop of the yielded Cancellation."""
    cancel = Cancellation(grace)

    def on_signal(signum: int, frame: object) -> None:
        if cancel.requested:
            cancel.force()
            return
        cancel.cancel()
        os.write(2, _STOPPING % round(grace))  # not rich: the handler may interrupt a print

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
