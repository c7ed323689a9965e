"""Running a node until told to stop: signals, and worker processes sharing one port."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pacsctl.archive.archive import Archive
from pacsctl.net.balance import SharedLoad, WorkerSlot
from pacsctl.net.listener import bind_listener
from pacsctl.net.scp import log_failure, start_scp
from pacsctl.net.types import ScpOptions
from pacsctl.node.service import ArchiveService, RunningNode
from pacsctl.parallel import die_with_parent

LOG = logging.getLogger(__name__)


def _wait_for_signal(stop: threading.Event) -> None:
    """Block the main thread until SIGTERM or SIGINT."""

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.wait(0.5):
        pass


def _serve_in_this_process(root: Path, options: ScpOptions, sock: socket.socket | None,
                           ready: Callable[[int], None] | None, stop: threading.Event,
                           grace: float, load: WorkerSlot | None = None) -> int:
    archive = Archive.open(root)
    if options.temp_dir is None:
        options.temp_dir = archive.tmp_dir
    service = ArchiveService(archive)
    scp = start_scp(service.handlers(), options, sock=sock, load=load)
    node = RunningNode(scp, service)
    if ready is not None:
        ready(node.port)
    _wait_for_signal(stop)
    LOG.info("stopping: no new associations; waiting for %d in flight", scp.active_associations)
    node.stop(graceful=True, timeout=grace)
    return 0


def run_node(root: Path, options: ScpOptions, workers: int = 1,
             ready: Callable[[int], None] | None = None, grace: float = 60.0) -> int:
    """Serve the archive at `root` until SIGTERM/SIGINT, then stop accepting, let in-flight
    associations finish (up to `grace` seconds) and return 0.

    With `workers` > 1, that many processes share one listening socket, the least busy one
    accepting each connection (`net.balance`), so several associations use several cores; a
    worker that dies is replaced. `ready(port)` is called once the node accepts connections."""
    stop = threading.Event()
    if workers <= 1:
        return _serve_in_this_process(root, options, None, ready, stop, grace)
    sock = bind_listener(options.host, options.port)
    port = int(sock.getsockname()[1])
    per_worker = max(1, -(-options.max_associations // workers))
    child_options = replace(options, port=port, max_associations=per_worker)

    load = SharedLoad(workers)

    def spawn(index: int) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the worker: no threads were started before the fork
            code = 1
            try:
                die_with_parent(parent)  # a crashed node never leaves orphans holding the port
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = _serve_in_this_process(root, replace(child_options), sock, None,
                                              threading.Event(), grace, load.slot(index))
            except BaseException as exc:
                log_failure("worker failed", exc)
            finally:
                os._exit(code)
        return pid

    children = {spawn(index): index for index in range(workers)}
    if ready is not None:
        ready(port)

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.is_set():
        stop.wait(0.2)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done and not stop.is_set():
                LOG.error("worker %d exited (%d); starting another", pid, status)
                index = children.pop(pid)
                children[spawn(index)] = index
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    worst = 0
    for pid in children:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    sock.close()
    return 0 if worst <= 0 else worst
