"""Running a node until told to stop: signals, and worker processes sharing one port.

SIGTERM or SIGINT (Ctrl-C) stops accepting and lets transfers in flight finish (up to the grace
period); a second one aborts them. With workers, the supervisor SIGKILLs a worker that shows no
sign of life for `KILL_AFTER` seconds while stopping (wedged: a thread holding the GIL), or that
is still there `KILL_AFTER` seconds after its grace period. SIGHUP re-reads the settings a node
can change while running (`node.settings`). The node's pid is in `ARCHIVE/serve.pid` while it
runs, for `kill -HUP`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pacsctl.archive.archive import Archive
from pacsctl.net.balance import SharedLoad, WorkerSlot
from pacsctl.net.listener import bind_listener
from pacsctl.net.scp import log_failure
from pacsctl.net.types import ScpOptions
from pacsctl.node.heartbeats import BEAT, Heartbeats
from pacsctl.node.pidfile import remove_pid_file, write_pid_file
from pacsctl.node.service import RunningNode, serve
from pacsctl.node.settings import reload_settings
from pacsctl.node.sidecar import SidecarSpec, start_sidecar
from pacsctl.node.signals import NodeSignal, NodeSignals
from pacsctl.parallel import die_with_parent

LOG = logging.getLogger(__name__)

KILL_AFTER = 5.0  # seconds a stopping worker may show no sign of life, or overrun its grace
# Seconds a serving worker may show no sign of life before it is killed and replaced: a thread
# holding the GIL that long (a C call that never returns) has taken the worker's associations
# down with it already; its port share goes to a fresh worker.
WEDGED_AFTER = 30.0
_BEAT = BEAT  # how often a worker shows it is alive, and the supervisor looks


def _serve_in_this_process(
    root: Path,
    options: ScpOptions,
    signals: NodeSignals,
    grace: float,
    ready: Callable[[int], None] | None = None,
    sock: socket.socket | None = None,
    load: WorkerSlot | None = None,
    fixed: frozenset[str] = frozenset(),
) -> int:
    """Serve until a stop signal, then stop gracefully (a second stop signal aborts); reload
    the settings on SIGHUP, except those in `fixed` (given on the command line).

    A worker (`load` given) runs its accept loop in the main thread, and waits for the signals
    in another. Linux wakes the main thread for a signal sent to the process, so a SIGSTOP
    flags the accepting thread before `kill()` returns: it stops before it can accept another
    connection. Accepting in a thread of its own, a worker went on until its main thread got a
    CPU and stopped the others; on a loaded machine it took a connection the kernel queued
    after the SIGSTOP and froze with it, unanswered, while the other worker idled. A single
    process keeps waiting in its main thread: threads C libraries started before the signals
    were blocked (numpy's OpenBLAS pool, at import) would be handed a SIGHUP or SIGTERM the
    main thread did not wait for, and the process die of it; a forked worker has none."""
    worker = load is not None
    node = serve(Archive.open(root), options, sock=sock, load=load, accept_in_caller=worker)
    if ready is not None:
        ready(node.port)
    if not worker:
        _obey_until_stop(node, signals, fixed)
    else:
        failed: list[BaseException] = []

        def watch_signals() -> None:
            try:
                _obey_until_stop(node, signals, fixed)
            except BaseException as exc:
                failed.append(exc)  # raised in the main thread, as when it waited itself
            finally:
                node.scp.stop_accepting()  # ends `accept_here` in the main thread

        watcher = threading.Thread(target=watch_signals, name="pacsctl-signals", daemon=True)
        watcher.start()
        node.scp.accept_here()
        watcher.join()
        if failed:
            raise failed[0]
    LOG.info("stopping: no new associations; waiting for %d in flight", node.scp.active_associations)

    def abort_now() -> bool:
        return signals.wait(0) is NodeSignal.STOP

    node.stop(graceful=True, timeout=grace, abort=abort_now)
    return 0


def _obey_until_stop(node: RunningNode, signals: NodeSignals, fixed: frozenset[str]) -> None:
    """Reload the settings on each SIGHUP until a stop signal comes."""
    while True:
        received = signals.wait(_BEAT)
        if received is NodeSignal.STOP:
            return
        if received is NodeSignal.RELOAD:
            reload_settings(node, fixed)


def run_node(
    root: Path,
    options: ScpOptions,
    workers: int = 1,
    ready: Callable[[int], None] | None = None,
    grace: float = 60.0,
    fixed: frozenset[str] = frozenset(),
    sidecar: SidecarSpec | None = None,
) -> int:
    """Serve the archive at `root` until SIGTERM/SIGINT, then stop accepting, let in-flight
    associations finish (up to `grace` seconds) and return 0 (1 if a worker had to be killed).

    With `workers` > 1, that many processes share one listening socket, the least busy one
    accepting each connection (`net.balance`), so several associations use several cores; a
    worker that dies is replaced. `ready(port)` is called once the node accepts connections.
    SIGHUP reloads the settings `node.settings` can change, except those named in `fixed`.
    A `sidecar` (the DICOMweb server) runs in a process of its own from start to stop, brought
    back by its keeper when it dies or hangs (`node.sidecar`); its exit code at the stop counts
    like a worker's."""
    pid_file = write_pid_file(root, root / "tmp")
    try:
        with NodeSignals() as signals:  # before any thread or worker starts
            companion = start_sidecar(sidecar, signals) if sidecar is not None else None
            code = 1
            try:
                if workers <= 1:
                    code = _serve_in_this_process(root, options, signals, grace, ready, fixed=fixed)
                else:
                    code = _supervise(root, options, workers, signals, grace, ready, fixed)
            finally:
                if companion is not None:
                    code = max(code, companion.stop())
            return code
    finally:
        remove_pid_file(pid_file)


def _supervise(
    root: Path,
    options: ScpOptions,
    workers: int,
    signals: NodeSignals,
    grace: float,
    ready: Callable[[int], None] | None,
    fixed: frozenset[str],
) -> int:
    sock = bind_listener(options.host, options.port)
    port = int(sock.getsockname()[1])
    per_worker = max(1, -(-options.max_associations // workers))
    child_options = replace(options, port=port, max_associations=per_worker)
    load = SharedLoad(workers)
    heartbeats = Heartbeats(workers)

    def spawn(index: int) -> int:
        parent = os.getpid()
        heartbeats.beat(index)
        pid = os.fork()
        if pid == 0:  # the worker: no threads were started before the fork
            code = 1
            try:
                die_with_parent(parent)  # a crashed node never leaves orphans holding the port
                heartbeats.keep_beating(index)
                code = _serve_in_this_process(
                    root,
                    replace(child_options),
                    signals,
                    grace,
                    sock=sock,
                    load=load.slot(index),
                    fixed=fixed,
                )
            except BaseException as exc:
                log_failure("worker failed", exc)
            finally:
                os._exit(code)
        return pid

    children = {spawn(index): index for index in range(workers)}
    if ready is not None:
        ready(port)
    while True:
        received = signals.wait(_BEAT)
        if received is NodeSignal.STOP:
            break
        if received is NodeSignal.RELOAD:  # each worker reloads and says what changed
            _signal_all(children, signal.SIGHUP)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                LOG.error("worker %d exited (%d); starting another", pid, status)
                index = children.pop(pid)
                children[spawn(index)] = index
            elif heartbeats.silent_for(children[pid]) > WEDGED_AFTER:
                LOG.error(
                    "worker %d has not run for %.0f s: killing it", pid, heartbeats.silent_for(children[pid])
                )
                heartbeats.beat(children[pid])  # killed once; replaced when reaped
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    try:
        return _stop_workers(children, heartbeats, signals, grace)
    finally:
        sock.close()


def _signal_all(children: dict[int, int], signum: int) -> None:
    for pid in children:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _stop_workers(
    children: dict[int, int], heartbeats: Heartbeats, signals: NodeSignals, grace: float
) -> int:
    """SIGTERM every worker and wait for them; a second stop signal has them abort what is in
    flight. SIGKILL a worker that is silent for `KILL_AFTER` s (it cannot run its stop) or still
    there `KILL_AFTER` s after its grace period (or after the second signal)."""
    _signal_all(children, signal.SIGTERM)
    deadline = time.monotonic() + grace + KILL_AFTER
    aborting = False
    worst = 0
    left = dict(children)
    killed: set[int] = set()
    while left:
        for pid in list(left):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                worst = max(worst, 1 if code < 0 else code)  # killed by a signal: 1
                del left[pid]
        if not left:
            break
        if signals.wait(0.05) is NodeSignal.STOP and not aborting:
            aborting = True  # Ctrl-C again: the workers abort their associations now
            _signal_all(left, signal.SIGTERM)
            deadline = min(deadline, time.monotonic() + KILL_AFTER)
        now = time.monotonic()
        for pid, index in left.items():
            silent = heartbeats.silent_for(index)
            if pid not in killed and (silent > KILL_AFTER or now > deadline):
                LOG.error(
                    "worker %d did not stop (%s): killing it",
                    pid,
                    f"silent for {silent:.0f} s" if silent > KILL_AFTER else "grace over",
                )
                killed.add(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return worst
