"""A process the node runs beside its DIMSE workers (the DICOMweb server), started and stopped
with the node. It is forked with the node's signals blocked, so it takes SIGTERM/SIGINT with
sigtimedwait like a worker; it dies with the node (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pacsctl.net.scp import log_failure
from pacsctl.node.signals import NodeSignal, NodeSignals
from pacsctl.parallel import die_with_parent

LOG = logging.getLogger(__name__)

# What a sidecar runs: given a wait-for-stop function (True once a stop signal arrived within
# the timeout it is given), it serves until then and returns its exit code.
SidecarMain = Callable[[Callable[[float], bool]], int]


@dataclass(frozen=True)
class SidecarSpec:
    """What to run beside the node: its name (for logs), its main, and the sockets it serves on
    (bound by the caller; the node closes its own copies once the sidecar has them)."""

    name: str
    main: SidecarMain
    sockets: tuple[socket.socket, ...] = field(default=())


@dataclass
class Sidecar:
    """A forked companion process of the node."""

    pid: int
    name: str

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM it and wait; SIGKILL after `timeout` seconds. Returns its exit code (1 if
        it had to be killed or died of a signal)."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                return 1 if code < 0 else code
            if time.monotonic() > deadline:
                LOG.error("%s (pid %d) did not stop: killing it", self.name, self.pid)
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return 1
            time.sleep(0.05)


def start_sidecar(spec: SidecarSpec, signals: NodeSignals) -> Sidecar:
    """Fork a process running `spec.main`; call inside `NodeSignals`, before any thread starts."""
    main, name = spec.main, spec.name
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            die_with_parent(parent)

            def should_stop(timeout: float) -> bool:
                return signals.wait(timeout) is NodeSignal.STOP

            code = main(should_stop)
        except BaseException as exc:
            log_failure(f"{name} failed", exc)
        finally:
            os._exit(code)
    for sock in spec.sockets:  # the sidecar alone accepts on them
        sock.close()
    return Sidecar(pid, name)
