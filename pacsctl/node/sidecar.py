"""A process the node runs beside its DIMSE workers (the DICOMweb server), started and stopped
with the node, and brought back when it dies or hangs.

`start_sidecar` forks a small keeper process (single-threaded, like the node before its workers
start) that forks the sidecar itself and watches it: a sidecar that exits while the node is not
stopping is logged and started again at once, and if it keeps dying (within `STEADY_AFTER` s
of its start) after 1, 2, 4 ... at most 60 s; one whose serving loop has not beaten for
`WEDGED_AFTER` s is killed and replaced. The keeper holds the listening sockets throughout, so
each new sidecar serves on the same port (no one else can take it meanwhile), and connections
made while none runs wait in the backlog instead of being refused. Both processes are forked
with the node's signals blocked and take SIGTERM/SIGINT with sigtimedwait like a worker (SIGHUP
is ignored); each dies with its parent (PR_SET_PDEATHSIG). A stop signal to the keeper ends the
watching first: a sidecar exiting during the stop is never restarted."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pacsctl.net.scp import log_failure
from pacsctl.node.heartbeats import BEAT, Heartbeats
from pacsctl.node.signals import NodeSignal, NodeSignals
from pacsctl.parallel import die_with_parent

LOG = logging.getLogger(__name__)

# What a sidecar runs: given a wait-for-stop function (True once a stop signal arrived within
# the timeout it is given) and an alive function (to call every few tenths of a second from its
# serving loop), it serves until the stop and returns its exit code.
SidecarMain = Callable[[Callable[[float], bool], Callable[[], None]], int]

# Seconds a serving sidecar's loop may not beat before it is killed and replaced: an event loop
# blocked that long (or a thread holding the GIL) answers no one already.
WEDGED_AFTER = 30.0
STEADY_AFTER = 60.0  # a sidecar that ran this long before it died is restarted at once
MAX_RESTART_DELAY = 60.0
KEEPER_STOP_TIMEOUT = 15.0  # the node waits this long for the keeper to stop
_SIDECAR_STOP_TIMEOUT = KEEPER_STOP_TIMEOUT - 3  # the keeper's wait for the sidecar, within it


@dataclass(frozen=True)
class SidecarSpec:
    """What to run beside the node: its name (for logs), its main, and the sockets it serves on
    (bound by the caller; the node closes its own copies once the keeper has them)."""

    name: str
    main: SidecarMain
    sockets: tuple[socket.socket, ...] = field(default=())


@dataclass
class Sidecar:
    """A forked companion process of the node (the keeper), or of the keeper (the sidecar)."""

    pid: int
    name: str

    def stop(self, timeout: float = KEEPER_STOP_TIMEOUT) -> int:
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
    """Fork the keeper of `spec` (which runs and restarts it); call inside `NodeSignals`, before
    any thread starts. Stopping the returned keeper stops the sidecar."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            die_with_parent(parent)
            code = _keep(spec, signals)
        except BaseException as exc:
            log_failure(f"{spec.name} keeper failed", exc)
        finally:
            os._exit(code)
    for sock in spec.sockets:  # the keeper holds them, its sidecar alone accepts on them
        sock.close()
    return Sidecar(pid, f"{spec.name} keeper")


def restart_delay(quick_deaths: int) -> float:
    """Seconds to wait before the next start after this many deaths in a row, each within
    `STEADY_AFTER` s of its start: 0 for the first, then 1, 2, 4 ... at most `MAX_RESTART_DELAY`."""
    if quick_deaths <= 1:
        return 0.0
    return min(MAX_RESTART_DELAY, 2.0 ** min(quick_deaths - 2, 16))


def _keep(spec: SidecarSpec, signals: NodeSignals) -> int:
    """In the keeper: run the sidecar until a stop signal, replacing it when it exits or hangs;
    then stop it. Returns its exit code at the stop (0 if none was running)."""
    heartbeat = Heartbeats(1)
    quick_deaths = 0
    while True:
        started = time.monotonic()
        sidecar = _spawn(spec, signals, heartbeat)
        status = _watch(sidecar, signals, heartbeat)
        if status is None:  # stop signal: no restart from here on
            return sidecar.stop(_SIDECAR_STOP_TIMEOUT)
        ran = time.monotonic() - started
        quick_deaths = 0 if ran >= STEADY_AFTER else quick_deaths + 1
        delay = restart_delay(quick_deaths)
        LOG.error(
            "%s (pid %d) %s after %.0f s; starting another%s",
            spec.name,
            sidecar.pid,
            _how_it_ended(status),
            ran,
            f" in {delay:.0f} s (it keeps dying)" if delay else "",
        )
        if _stop_within(signals, delay):
            return 0


def _spawn(spec: SidecarSpec, signals: NodeSignals, heartbeat: Heartbeats) -> Sidecar:
    parent = os.getpid()
    heartbeat.beat(0)
    pid = os.fork()
    if pid == 0:  # the sidecar
        code = 1
        try:
            die_with_parent(parent)
            serving = threading.Event()
            heartbeat.keep_beating(0, until=serving)  # while it starts; then its loop beats

            def alive() -> None:
                serving.set()
                heartbeat.beat(0)

            def should_stop(timeout: float) -> bool:
                return signals.wait(timeout) is NodeSignal.STOP

            code = spec.main(should_stop, alive)
        except BaseException as exc:
            log_failure(f"{spec.name} failed", exc)
        finally:
            os._exit(code)
    return Sidecar(pid, spec.name)


def _watch(sidecar: Sidecar, signals: NodeSignals, heartbeat: Heartbeats) -> int | None:
    """Wait until the sidecar exits (its wait status) or a stop signal arrives (None); kill it
    if it stops beating."""
    killed = False
    while True:
        if signals.wait(BEAT) is NodeSignal.STOP:
            return None
        done, status = os.waitpid(sidecar.pid, os.WNOHANG)
        if done:
            # Ctrl-C reaches the whole process group: the sidecar may have ended on the same
            # stop signal this keeper has not taken yet. That is a stop, not a death.
            return None if _stop_pending(signals) else status
        silent = heartbeat.silent_for(0)
        if silent > WEDGED_AFTER and not killed:
            LOG.error("%s (pid %d) has not run for %.0f s: killing it", sidecar.name, sidecar.pid, silent)
            killed = True
            try:
                os.kill(sidecar.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _stop_pending(signals: NodeSignals) -> bool:
    """Whether a stop signal is pending (SIGHUPs taken on the way are dropped, as always)."""
    while True:
        received = signals.wait(0)
        if received is None:
            return False
        if received is NodeSignal.STOP:
            return True


def _stop_within(signals: NodeSignals, seconds: float) -> bool:
    """Wait `seconds`; True as soon as a stop signal arrives."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return _stop_pending(signals)
        if signals.wait(min(left, BEAT)) is NodeSignal.STOP:
            return True


def _how_it_ended(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"
