"""Worker processes for CPU-bound work over many files, and stopping them cleanly.

Hashing releases the GIL but parsing DICOM headers does not, so `import`, `verify` and
`reindex` use worker processes. They are forked (Linux: no re-import, starts in milliseconds)
and get chunks of work, so per-file IPC costs nothing; only small results travel back.

Workers never outlive the command: they die with their parent (PR_SET_PDEATHSIG, even when the
parent is killed with SIGKILL), and ignore SIGINT/SIGTERM so that the parent decides how to
stop. In the parent, the first SIGINT or SIGTERM stops new work: queued chunks are cancelled,
running ones get `grace` seconds to finish (their results are still yielded), then the workers
are killed and KeyboardInterrupt is raised. A second signal raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Any, TypeVar

from pacsctl.errors import PacsctlError

T = TypeVar("T")
R = TypeVar("R")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_SECONDS = 0.2  # how often a waiting parent looks whether it was told to stop
PR_SET_PDEATHSIG = 1


class WorkerDiedError(PacsctlError):
    """A worker process died under us (killed, or out of memory)."""


def default_jobs() -> int:
    """One worker per core."""
    return max(1, os.cpu_count() or 1)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def chunk_size(count: int, jobs: int, largest: int = 64) -> int:
    """Chunks small enough to balance the workers and show progress, big enough to be cheap."""
    return max(1, min(largest, count // (jobs * 8) or 1))


def die_with_parent(parent_pid: int | None = None) -> None:
    """Linux: have this (forked) process SIGKILLed when its parent dies, even by SIGKILL, so no
    worker lives on as an orphan holding journals, locks or a port.

    `parent_pid` is the pid the parent had before the fork: if the parent died before prctl
    took effect, this process exits at once (comparing with 1 would miss a subreaper).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    parent = os.getppid()
    if parent == 1 or (parent_pid is not None and parent != parent_pid):
        os._exit(1)


class StopSignals:
    """While entered (in the main thread): the first SIGINT/SIGTERM sets `requested` instead of
    interrupting, a second one raises KeyboardInterrupt. Elsewhere it never requests a stop."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.requested.is_set():
            raise KeyboardInterrupt


def _init_worker(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    for signum in STOP_SIGNALS:  # the parent decides how to stop (Ctrl-C reaches the whole group)
        signal.signal(signum, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def map_unordered(
    func: Callable[[T], R],
    tasks: Iterable[T],
    jobs: int,
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    grace: float = 0.0,
    in_flight: int | None = None,
    died_hint: str = "run the command again",
) -> Iterator[R]:
    """Yield `func(task)` for every task as it completes, in `jobs` worker processes.

    `func` and `initializer` must be module-level functions; `initializer(*initargs)` runs once
    in each worker. At most `in_flight` tasks (default `3 * jobs`) are queued at a time, so
    tasks may be produced lazily. With `jobs <= 1` everything runs here, in order (without the
    initializer). On SIGINT/SIGTERM (see the module docstring; `grace` seconds for running
    tasks) KeyboardInterrupt is raised; a worker that dies raises WorkerDiedError.
    """
    with StopSignals() as stop:
        if jobs <= 1:
            for task in tasks:
                stop.check()
                yield func(task)
            stop.check()
            return
        yield from _run_pool(
            func, tasks, jobs, initializer, initargs, grace, in_flight or 3 * jobs, died_hint, stop
        )


def _run_pool(
    func: Callable[[T], R],
    tasks: Iterable[T],
    jobs: int,
    initializer: Callable[..., None] | None,
    initargs: tuple,
    grace: float,
    in_flight: int,
    died_hint: str,
    stop: StopSignals,
) -> Iterator[R]:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(os.getpid(), initializer, initargs),
    )
    pending: set[Future] = set()
    finished = False
    try:
        try:
            for task in tasks:
                stop.check()
                pending.add(pool.submit(func, task))
                while len(pending) >= in_flight:
                    done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
                    stop.check()
            while pending:
                done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
                stop.check()
            finished = True
        except KeyboardInterrupt:
            # Stop new work; give running tasks their grace, keep what they finish, kill the rest.
            for future in pending:
                future.cancel()
            deadline = time.monotonic() + grace
            running = {f for f in pending if not f.cancelled()}
            while running and time.monotonic() < deadline:
                done, running = wait(
                    running, timeout=max(0.0, deadline - time.monotonic()), return_when=FIRST_COMPLETED
                )
                for future in done:
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        continue
                    yield result
            _kill_workers(pool)
            raise
    except BrokenProcessPool:
        if stop.requested.is_set():
            raise KeyboardInterrupt from None
        raise WorkerDiedError("a worker process died (killed, or out of memory)", hint=died_hint) from None
    finally:
        # On any early exit the survivors are killed: after a worker died, the executor
        # SIGTERMs the others and joins them, and ours ignore SIGTERM, so shutdown would hang.
        if not finished:
            _kill_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL a pool's workers (Python < 3.14 has no public way; `_processes` is pid -> Process).
    Safe for pacsctl's workers: every write they make is atomic, and a killed writer's journal
    and temp files are folded or cleaned by the next process, as after `kill -9`."""
    for process in list(getattr(pool, "_processes", {}).values()):
        try:
            process.kill()
        except (OSError, ValueError, AttributeError):
            pass
