"""Running CPU-bound work over many files on every core, in chunks.

Hashing releases the GIL but parsing DICOM headers does not, so `verify` and `reindex` use
worker processes. They are forked (Linux: no re-import, starts in milliseconds) and get chunks
of work, so per-file IPC costs nothing; only small results travel back.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """One worker per core."""
    return max(1, os.cpu_count() or 1)


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in consecutive slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def chunk_size(count: int, jobs: int, largest: int = 64) -> int:
    """Chunks small enough to balance the workers and show progress, big enough to be cheap."""
    return max(1, min(largest, count // (jobs * 8) or 1))


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop on Ctrl-C


def map_unordered(func: Callable[[T], R], chunks: Iterable[T], jobs: int) -> Iterator[R]:
    """Yield `func(chunk)` for every chunk as it completes, in `jobs` worker processes.

    `func` must be a module-level function. With `jobs <= 1` everything runs here, in order.
    On Ctrl-C (or when the caller stops iterating) queued chunks are cancelled.
    """
    if jobs <= 1:
        for chunk in chunks:
            yield func(chunk)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    context = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_ignore_sigint)
    pending: set[Future] = set()
    try:
        for chunk in chunks:
            pending.add(pool.submit(func, chunk))
            if len(pending) >= 3 * jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
