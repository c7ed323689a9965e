"""Bulk import of folders, files, zip files and DICOMDIR media into the archive.

Sources are read and stored in batches by worker processes (parsing is CPU-bound; both cores
count), each batch committed with one round of fsyncs. Every input ends in exactly one of:
stored, duplicate, quarantined, skipped. Interrupted and re-run, an import completes without
duplicating anything: what was committed is found by name and counted as a duplicate.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from pacsctl.archive.archive import DUPLICATE, QUARANTINED, SKIPPED, STORED, Archive, IngestResult
from pacsctl.ingest.sources import Problem, Source, find_sources
from pacsctl.errors import PacsctlError, StorageFullError
from pacsctl.summary import SummaryRecord

# A batch is read into memory and committed with one round of syncs: up to BATCH_FILES inputs,
# fewer when they add up to BATCH_BYTES (a batch of 16 multi-GB files must not exhaust memory).
BATCH_FILES = 64
BATCH_BYTES = 32 << 20


@dataclass
class ImportSummary(SummaryRecord):
    """Counts of an import; `files == imported + duplicates + quarantined + skipped`."""

    files: int = 0
    imported: int = 0
    duplicates: int = 0
    quarantined: int = 0
    skipped: int = 0
    missing: int = 0  # of the skipped: referenced by a DICOMDIR but absent from the media
    bytes: int = 0
    elapsed: float = 0.0
    dry_run: bool = False

    def count(self, result: IngestResult) -> None:
        self.files += 1
        if result.status == STORED:
            self.imported += 1
            self.bytes += result.size
        elif result.status == DUPLICATE:
            self.duplicates += 1
        elif result.status == QUARANTINED:
            self.quarantined += 1
        else:
            self.skipped += 1



def collect_sources(paths: list[str]) -> list[Source | Problem]:
    """Walk the inputs first, so progress can show a total and an ETA."""
    return list(find_sources(paths))


def import_sources(
    archive: Archive,
    sources: list[Source | Problem],
    *,
    jobs: int = 1,
    on_conflict: str | None = None,
    dry_run: bool = False,
    on_result: Callable[[IngestResult], None] = lambda r: None,
) -> ImportSummary:
    """Import `sources` into `archive`, calling `on_result` for every input as it is done.

    With `jobs > 1`, batches run in that many worker processes. The index is folded before
    returning, also when interrupted (KeyboardInterrupt is re-raised after a clean stop).
    """
    summary = ImportSummary(dry_run=dry_run)
    started = time.monotonic()

    def record(result: IngestResult) -> None:
        summary.count(result)
        on_result(result)

    try:
        problems = [s for s in sources if isinstance(s, Problem)]
        for problem in problems:
            summary.missing += problem.missing
            record(IngestResult(SKIPPED, problem.origin, reason=problem.reason))
        batches = _batches([s for s in sources if isinstance(s, Source)])
        if jobs <= 1:
            for batch in batches:
                for result in ingest_batch(archive, batch, on_conflict, dry_run):
                    record(result)
        else:
            _run_pool(archive.root, batches, jobs, on_conflict, dry_run, record)
    except BaseException:
        if not dry_run:  # fold what was committed, but never hide the error that stopped us
            try:
                archive.index.flush()
            except (OSError, PacsctlError):
                pass  # (e.g. the disk is full or read-only): the next writer folds the journals
        raise
    else:
        if not dry_run:
            try:
                archive.index.flush()
            except OSError as exc:
                error = StorageFullError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else PacsctlError
                raise error(f"could not fold the index: {exc.strerror or exc}",
                            hint="the files are stored and journaled; the next import (or `pacsctl reindex`) completes the index") from None
    finally:
        summary.elapsed = time.monotonic() - started
    return summary


def ingest_batch(archive: Archive, batch: list[Source], on_conflict: str | None, dry_run: bool) -> list[IngestResult]:
    """Read a batch of sources and store them with one group commit."""
    results: list[IngestResult] = []
    items: list[tuple[bytes, str]] = []
    for source in batch:
        try:
            items.append((source.read(), source.origin))
        except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
            reason = f"unreadable: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else f"unreadable: {exc}"
            results.append(IngestResult(SKIPPED, source.origin, reason=reason))
    return results + archive.ingest(items, on_conflict, dry_run=dry_run)


def _batches(sources: list[Source]) -> Iterator[list[Source]]:
    """Consecutive batches of at most BATCH_FILES sources and (beyond the first) BATCH_BYTES."""
    batch: list[Source] = []
    size = 0
    for source in sources:
        if batch and (len(batch) >= BATCH_FILES or size + source.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(source)
        size += source.size
    if batch:
        yield batch


# -- worker processes ----------------------------------------------------------------------

_worker_archive: Archive | None = None


def _init_worker(root: str) -> None:
    global _worker_archive
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop on Ctrl-C
    _worker_archive = Archive.open(root)


def _worker_batch(batch: list[Source], on_conflict: str | None, dry_run: bool) -> list[IngestResult]:
    assert _worker_archive is not None
    return ingest_batch(_worker_archive, batch, on_conflict, dry_run)


def _run_pool(
    root: Path,
    batches: Iterable[list[Source]],
    jobs: int,
    on_conflict: str | None,
    dry_run: bool,
    record: Callable[[IngestResult], None],
) -> None:
    """Keep `2 * jobs` batches in flight; on Ctrl-C, let running batches commit, then stop."""
    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(str(root),))
    pending: set[Future] = set()
    try:
        for batch in batches:
            pending.add(pool.submit(_worker_batch, batch, on_conflict, dry_run))
            if len(pending) >= 2 * jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for result in future.result():
                        record(result)
        for future in pending:
            for result in future.result():
                record(result)
    except BrokenProcessPool:
        raise PacsctlError(
            "a worker process died (killed, or out of memory)",
            hint="what was committed is safe; run the same import again to complete it",
        ) from None
    finally:
        # Workers exit here, which releases their journals for the parent's final fold.
        pool.shutdown(wait=True, cancel_futures=True)


def default_jobs() -> int:
    """One worker per core."""
    return max(1, os.cpu_count() or 1)
