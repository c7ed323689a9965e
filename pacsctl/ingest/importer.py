"""Bulk import of folders, files, zip files and DICOMDIR media into the archive.

Sources are read and stored in batches by worker processes (parsing is CPU-bound; both cores
count), each batch committed with one round of fsyncs. Every input ends in exactly one of:
stored, duplicate, quarantined, skipped. Interrupted and re-run, an import completes without
duplicating anything: what was committed is found by name and counted as a duplicate.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pacsctl.archive.archive import DUPLICATE, QUARANTINED, SKIPPED, STORED, Archive, IngestResult
from pacsctl.errors import PacsctlError, StorageFullError, UsageError
from pacsctl.ingest.reading import Loaded, read_source, spill_dir_for
from pacsctl.ingest.sources import ZIP_ERRORS, Problem, Source, find_sources
from pacsctl.parallel import StopSignals, map_unordered
from pacsctl.storage import files
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
    unreadable: int = 0  # of the skipped: input that could not be read (a bad zip, EACCES, ...)
    bytes: int = 0
    elapsed: float = 0.0
    dry_run: bool = False
    interrupted: bool = False  # stopped by Ctrl-C/SIGTERM: the counts are what was done

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
            self.unreadable += result.unreadable

    @property
    def incomplete(self) -> bool:
        """Something given could not be stored or read: the import exits 3."""
        return bool(self.quarantined or self.missing or self.unreadable)


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C/SIGTERM stopped an import; `summary` counts what was done (and folded)."""

    def __init__(self, summary: ImportSummary) -> None:
        super().__init__("interrupted")
        self.summary = summary


def collect_sources(paths: list[str]) -> list[Source | Problem]:
    """Walk the inputs first, so progress can show a total and an ETA. A path given that does
    not exist is a usage error (a typo must not end in "skipped 1 of 1", exit 0)."""
    absent = [p for p in paths if not os.path.lexists(p)]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise UsageError(
            f"no such file or folder: {absent[0]}{more}", hint="check the path; nothing was imported"
        )
    return list(find_sources(paths))


def import_sources(
    archive: Archive,
    sources: list[Source | Problem],
    *,
    jobs: int = 1,
    on_conflict: str | None = None,
    dry_run: bool = False,
    on_result: Callable[[IngestResult], None] = lambda r: None,
    route: bool = True,
) -> ImportSummary:
    """Import `sources` into `archive`, calling `on_result` for every input as it is done.

    With `jobs > 1`, batches run in that many worker processes. The index is folded before
    returning, also when interrupted: the first Ctrl-C/SIGTERM stops new batches, running ones
    commit (or are cut off after STOP_GRACE seconds), then ImportInterrupted carries the summary.
    With `route`, what is stored is queued for the archive's routes.
    """
    archive.route = route
    summary = ImportSummary(dry_run=dry_run)
    started = time.monotonic()

    def record(result: IngestResult) -> None:
        summary.count(result)
        on_result(result)

    try:
        problems = [s for s in sources if isinstance(s, Problem)]
        for problem in problems:
            summary.missing += problem.missing
            record(
                IngestResult(SKIPPED, problem.origin, reason=problem.reason, unreadable=problem.unreadable)
            )
        batches = _batches([s for s in sources if isinstance(s, Source)])
        # A dry run plans in one process: the plan (what each earlier input would have stored)
        # must see every batch, as the real run's archive does, and must not open the archive
        # in workers (that would create it).
        if jobs <= 1 or dry_run:
            with StopSignals() as stop:
                for batch in batches:
                    stop.check()
                    for result in ingest_batch(archive, batch, on_conflict, dry_run):
                        record(result)
        else:
            _run_pool(archive.root, batches, jobs, on_conflict, dry_run, record, route)
    except BaseException as exc:
        if not dry_run:  # fold what was committed, but never hide the error that stopped us
            try:
                archive.index.flush()
                files.remove_dead_writers_temps(archive.tmp_dir)  # of workers killed after the grace
            except (OSError, PacsctlError):
                pass  # (e.g. the disk is full or read-only): the next writer folds the journals
        if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, ImportInterrupted):
            summary.interrupted = True
            summary.elapsed = time.monotonic() - started
            raise ImportInterrupted(summary) from None
        raise
    else:
        if not dry_run:
            try:
                archive.index.flush()
            except OSError as exc:
                error = StorageFullError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else PacsctlError
                raise error(
                    f"could not fold the index: {exc.strerror or exc}",
                    hint="the files are stored and journaled; the next import (or `pacsctl reindex`) "
                    "completes the index",
                ) from None
    finally:
        summary.elapsed = time.monotonic() - started
    return summary


def ingest_batch(
    archive: Archive, batch: list[Source], on_conflict: str | None, dry_run: bool
) -> list[IngestResult]:
    """Read a batch of sources and store them with one group commit. Memory stays bounded:
    the batch is at most BATCH_BYTES of small inputs, large ones are streamed (`reading`)."""
    results: list[IngestResult] = []
    items: list[tuple] = []
    loaded: list[Loaded] = []
    spill = spill_dir_for(archive.tmp_dir, dry_run)
    try:
        for source in batch:
            try:
                got = read_source(source, spill, archive.config.max_instance_size)
            except (OSError, *ZIP_ERRORS) as exc:
                reason = (
                    f"unreadable: {exc.strerror}"
                    if isinstance(exc, OSError) and exc.strerror
                    else f"unreadable: {exc}"
                )
                results.append(IngestResult(SKIPPED, source.origin, reason=reason, unreadable=True))
                continue
            if isinstance(got, IngestResult):
                results.append(got)
            else:
                loaded.append(got)
                items.append(got.item)
        return results + archive.ingest(items, on_conflict, dry_run=dry_run)
    finally:
        for got in loaded:  # unmapped; a streamed temp file the archive did not take is removed
            got.close()


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

# Running batches get this long to commit after Ctrl-C/SIGTERM; then their workers are killed
# (safe as after `kill -9`: a batch is named only once its data is durable).
STOP_GRACE = 1.5

_worker_archive: Archive | None = None


def _init_worker(root: str, route: bool = True) -> None:
    global _worker_archive
    _worker_archive = Archive.open(root)
    _worker_archive.route = route


def _worker_batch(task: tuple[list[Source], str | None, bool]) -> list[IngestResult]:
    assert _worker_archive is not None
    batch, on_conflict, dry_run = task
    return ingest_batch(_worker_archive, batch, on_conflict, dry_run)


def _run_pool(
    root: Path,
    batches: Iterable[list[Source]],
    jobs: int,
    on_conflict: str | None,
    dry_run: bool,
    record: Callable[[IngestResult], None],
    route: bool = True,
) -> None:
    """Keep `2 * jobs` batches in flight; on Ctrl-C/SIGTERM, let running batches commit, then stop."""
    results = map_unordered(
        _worker_batch,
        ((batch, on_conflict, dry_run) for batch in batches),
        jobs,
        initializer=_init_worker,
        initargs=(str(root), route),
        grace=STOP_GRACE,
        in_flight=2 * jobs,
        died_hint="what was committed is safe; run the same import again to complete it",
    )
    # Workers have exited when this returns, which releases their journals for the final fold.
    for batch_results in results:
        for result in batch_results:
            record(result)
