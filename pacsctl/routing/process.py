"""The forwarder as a process of its own beside `pacsctl serve`.

Its own interpreter, so forwarding never holds the GIL of a process answering C-STOREs, and
under SCHED_IDLE (else at nice `FORWARDER_NICE`), so it takes only the CPU the node leaves. It dies
with the node (even by SIGKILL: `parallel.die_with_parent`), and stops on SIGTERM/SIGINT after
finishing the round in flight. Whatever it had not marked delivered is delivered after a restart.

    python -m pacsctl.routing.process ARCHIVE PARENT_PID
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

STOP_TIMEOUT = 15.0
# The forwarder yields the CPU to the node: on a busy 2-core machine its sending (about 1.2 ms of
# CPU per CT instance over C-STORE) would otherwise slow the acknowledgements. Where SCHED_IDLE
# is refused, nice 10 gets it about a tenth of a core while the node is busy.
FORWARDER_NICE = 10


def yield_the_cpu() -> None:
    """Run this process under SCHED_IDLE where Linux has it (it then gets the CPU only when no
    normal process wants it), else at nice `FORWARDER_NICE`."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.nice(FORWARDER_NICE)
    except OSError:
        pass


def start_forwarder(root: Path) -> subprocess.Popen[bytes]:
    """Start the forwarder for the archive at `root` as a child of this process. Call it before
    signals are blocked (a child inherits the signal mask) and before threads start."""
    return subprocess.Popen(
        [sys.executable, "-m", "pacsctl.routing.process", str(root), str(os.getpid())],
        stdin=subprocess.DEVNULL,
    )


def stop_forwarder(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the forwarder and wait; SIGKILL it if it has not stopped after `timeout` (safe:
    nothing unconfirmed is ever marked delivered)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main(argv: list[str]) -> int:
    """Run the forwarder of archive `argv[0]` for parent pid `argv[1]` until SIGTERM/SIGINT."""
    yield_the_cpu()  # first: even its imports must not compete with the node
    from pacsctl.parallel import die_with_parent
    from pacsctl.routing.forwarder import Forwarder

    root, parent = Path(argv[0]), int(argv[1])
    die_with_parent(parent)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # its errors are ours, typed
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the node's reload; the config is followed anyway
    Forwarder(root).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
