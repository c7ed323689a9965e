"""`backup s3://BUCKET/PREFIX`: the folder backup's manifest and snapshot, on object storage.

Under the prefix the bucket holds what a backup folder holds: `objects/...` (the same relative
paths as in the archive), `pacsctl.toml`, the quarantine and audit log, and the manifest
(`backup-manifest.ndjson`, the very format of `integrity/manifest`), so it can be verified and
restored from alone.

- Consistent snapshot: the file list is the index as it was when the backup started.
- Every object carries its own SHA-256 in its metadata, and the manifest lists it: nothing ever
  depends on ETags (a multipart ETag is no MD5, which makes naive tools re-upload everything).
- Incremental: an instance whose manifest entry matches the archive's record and whose object
  has that size in the listing is skipped (one listing request per 1000 objects, no HEADs).
- Resumable: the manifest is rewritten every CHECKPOINT_SECONDS and when the run stops; after a
  kill, objects uploaded but not yet listed are found in the listing and adopted after a HEAD
  shows their SHA-256 is the recorded one, instead of being uploaded again.
- Only bytes that hash to the SHA-256 recorded at ingest are uploaded (bit rot in the archive
  never replaces a good copy); the manifest lists an object only after its PUT succeeded.
- Nothing is deleted remotely unless `prune` is given; versioning and Object Lock (WORM) of the
  bucket are reported with every run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from pacsctl.archive.archive import AUDIT_LOG, OBJECTS, QUARANTINE, Archive
from pacsctl.config import CONFIG_NAME
from pacsctl.errors import UsageError
from pacsctl.integrity import findings as F
from pacsctl.integrity.backup import BackupReport, BackupSummary, snapshot_files
from pacsctl.integrity.filecheck import Expected
from pacsctl.integrity.findings import Finding
from pacsctl.integrity.manifest import MANIFEST_NAME, Manifest, encode_manifest, parse_manifest
from pacsctl.integrity.verify import unindexed_files
from pacsctl.storage.lease import LEASE_NAME, Lease
from pacsctl.storage.objects import (
    ObjectInfo,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreFailure,
)

CHECKPOINT_SECONDS = 30.0  # the manifest is rewritten this often: a killed run keeps its work
DEFAULT_UPLOADS = 10  # parallel uploads (what the AWS CLI uses): latency, not CPU, bounds a PUT

Progress = Callable[[int, int], None]  # (files done, bytes uploaded) since the last call


@dataclass
class OffsiteSummary(BackupSummary):
    """The closing record of a backup to a bucket."""

    adopted: int = 0  # found in the bucket with the right SHA-256 (an interrupted run): not sent again
    pruned: int = 0  # objects deleted with `prune`
    versioning: str = ""
    object_lock: bool = False
    worm: bool = False


def open_store(url: str, endpoint_url: str | None = None, jobs: int | None = None) -> ObjectStore:
    """The bucket of a backup URL, its access checked (typed failure: auth, no bucket, network)."""
    store = ObjectStore(url, endpoint_url=endpoint_url, max_connections=(jobs or DEFAULT_UPLOADS) + 4)
    store.check_access()
    return store


def read_bucket_manifest(store: ObjectStore) -> Manifest | None:
    """The manifest of a bucket backup, or None when there is none."""
    try:
        return parse_manifest(store.get_bytes(MANIFEST_NAME))
    except ObjectStoreError as exc:
        if exc.failure is ObjectStoreFailure.NOT_FOUND:
            return None
        raise


def backup_to_bucket(
    archive: Archive,
    store: ObjectStore,
    *,
    jobs: int | None = None,
    prune: bool = False,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = lambda files, nbytes: None,
    lease: Lease | None = None,
) -> BackupReport:
    """Bring the backup in the bucket up to date with what the archive held when this started.

    One run at a time per prefix: under `lease` (by default a Lease as "backup", refused with
    LockBusy while another run's is live), renewed while it runs, released at the end."""
    with lease or Lease(store, "backup") as held:
        return _backup_to_bucket(archive, store, jobs, prune, on_total, progress, held)


def _backup_to_bucket(
    archive: Archive,
    store: ObjectStore,
    jobs: int | None,
    prune: bool,
    on_total: Callable[[int], None],
    progress: Progress,
    lease: Lease,
) -> BackupReport:
    started = time.monotonic()
    summary = OffsiteSummary()
    report = BackupReport(summary=summary)
    protection = store.protection()
    summary.versioning, summary.object_lock, summary.worm = (
        protection.versioning,
        protection.object_lock,
        protection.worm,
    )
    snapshot = snapshot_files(archive)
    listing = {o.relpath: o.size for o in store.iter_objects()}
    previous = read_bucket_manifest(store)
    if previous is None:
        _check_is_backup(store, listing)
        previous = Manifest()
    run = _Upload(archive, store, previous.entries, report, progress, lease)
    todo = run.plan(sorted(snapshot.values(), key=lambda e: e.path), listing, jobs or DEFAULT_UPLOADS)
    on_total(len(snapshot))
    progress(summary.skipped + summary.adopted, 0)
    try:
        run.upload_all(todo, jobs or DEFAULT_UPLOADS)
    except BaseException:  # Ctrl-C, the network gone: keep and list what was uploaded
        try:
            run.commit()
        except ObjectStoreError:
            pass
        raise
    run.commit()
    summary.other_files = _mirror_others(archive, store, listing)
    if prune:
        summary.pruned = run.prune(snapshot, listing)
    unindexed = unindexed_files(archive, snapshot.keys())
    for finding in unindexed:
        finding.detail += "; not backed up"
    report.findings += unindexed
    summary.unindexed = len(unindexed)
    summary.instances = len(run.entries)
    summary.elapsed = time.monotonic() - started
    return report


def upload_again(
    archive: Archive, store: ObjectStore, wanted: list[Expected], jobs: int = 8, lease: Lease | None = None
) -> dict[str, str]:
    """Upload `wanted` files from the archive again over damaged or missing objects, and list them
    in the manifest (under the caller's `lease`). Returns why, for each file that could not be uploaded."""
    previous = read_bucket_manifest(store) or Manifest()
    report = BackupReport(summary=OffsiteSummary())
    run = _Upload(archive, store, previous.entries, report, lambda files, nbytes: None, lease)
    try:
        run.upload_all(wanted, jobs)
    finally:
        run.commit()
    reasons = {f.path: f.detail for f in report.findings if f.path}
    return {e.path: reasons.get(e.path, "not uploaded") for e in wanted if e.path not in run.published}


def describe_protection(summary: OffsiteSummary) -> str:
    """One line on what protects the bucket's objects from deletion and overwriting."""
    if summary.worm:
        return "the bucket has Object Lock with a default retention (WORM): objects cannot be deleted early"
    if summary.object_lock or summary.versioning == "Enabled":
        return "the bucket keeps old versions: an overwritten or deleted object can be recovered"
    return "the bucket has neither versioning nor Object Lock: a deleted or overwritten object is gone"


class _Upload:
    """One run: the manifest being built and the uploads."""

    def __init__(
        self,
        archive: Archive,
        store: ObjectStore,
        previous: dict[str, Expected],
        report: BackupReport,
        progress: Progress,
        lease: Lease | None = None,
    ) -> None:
        self.archive, self.store, self.report, self.progress = archive, store, report, progress
        self.lease = lease
        self.summary: OffsiteSummary = report.summary  # type: ignore[assignment]
        self.previous = previous
        self.entries: dict[str, Expected] = dict(previous)  # kept: files the archive lost
        self.published: set[str] = set()
        self.dirty = False
        self.last_checkpoint = time.monotonic()
        # Set by the first upload that finds the store gone: the uploads queued behind it must
        # not start (on a dead link each would wait out every time-out and retry again).
        self.store_failed = threading.Event()

    def plan(self, snapshot: Iterable[Expected], listing: dict[str, int], threads: int) -> list[Expected]:
        """What must be uploaded; the rest is counted as skipped (or adopted, after a HEAD)."""
        todo, unlisted = [], []
        for expected in snapshot:
            old = self.previous.get(expected.path)
            listed = listing.get(expected.path)
            if listed != expected.size:
                todo.append(expected)
            elif old is not None and (old.size, old.sha256) == (expected.size, expected.sha256):
                self.summary.skipped += 1
                if old != expected:  # e.g. study UIDs a manifest of an older pacsctl lacks
                    self.dirty = True
                self.entries[expected.path] = expected
            else:  # there, but not listed as this content: uploaded by a run that was killed?
                unlisted.append(expected)
        for expected, info in _heads(self.store, unlisted, threads):
            if info is not None and info.sha256 == expected.sha256 and info.size == expected.size:
                self.summary.adopted += 1
                self.entries[expected.path] = expected
                self.dirty = True
            else:
                todo.append(expected)
        return todo

    def upload_all(self, todo: list[Expected], threads: int) -> None:
        """Upload in parallel, a bounded number in flight; checkpoint the manifest now and then."""
        pending: set[Future[tuple[Expected, Exception | None]]] = set()
        queue = iter(todo)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            try:
                while True:
                    while len(pending) < 2 * threads:
                        expected = next(queue, None)
                        if expected is None:
                            break
                        pending.add(pool.submit(self._upload, expected))
                    if not pending:
                        break
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    failure: BaseException | None = None
                    for future in done:  # every upload that finished is listed, even after a failure
                        try:
                            self._settle(*future.result())
                        except _NotStarted:  # the failure that stopped it comes in its own time
                            pass
                        except BaseException as exc:  # noqa: BLE001 - raised once all are settled
                            failure = failure or exc
                    if failure is not None:
                        raise failure
                    if self.dirty and time.monotonic() - self.last_checkpoint > CHECKPOINT_SECONDS:
                        self.commit()
            except BaseException:
                for future in pending:
                    future.cancel()
                for future in pending:  # those already running: settle what finished
                    if not future.cancelled():
                        try:
                            self._settle(*future.result())
                        except BaseException:  # noqa: BLE001 - the first failure is the one raised
                            pass
                raise

    def _upload(self, expected: Expected) -> tuple[Expected, Exception | None]:
        if self.store_failed.is_set():
            raise _NotStarted()
        try:
            self.store.put_file(
                expected.path, self.archive.path_of(expected.path), expected_sha256=expected.sha256
            )
        except FileNotFoundError:
            return expected, FileNotFoundError("the archive's file is missing (run `pacsctl verify`)")
        except OSError as exc:
            return expected, exc
        except ObjectStoreError as exc:
            if exc.failure is ObjectStoreFailure.CONTENT:
                return expected, exc
            self.store_failed.set()
            raise  # the store as a whole failed (network, credentials): stop the run
        return expected, None

    def _settle(self, expected: Expected, failure: Exception | None) -> None:
        if failure is None:
            self.entries[expected.path] = expected
            self.published.add(expected.path)
            self.dirty = True
            self.summary.copied += 1
            self.summary.bytes += expected.size
            self.progress(1, expected.size)
            return
        if isinstance(failure, ObjectStoreError):
            reason = "the archive's file does not match the hash recorded at ingest (run `pacsctl verify`)"
        elif isinstance(failure, OSError) and failure.strerror:
            reason = failure.strerror
        else:
            reason = str(failure)
        self.summary.failed += 1
        self.report.findings.append(
            Finding(expected.path, F.COPY_FAILED, reason, expected.sop_instance_uid, F.BACKUP)
        )
        self.progress(1, 0)

    def commit(self) -> None:
        """List what was uploaded in the manifest (one PUT replaces it whole), while the lease is ours."""
        if self.lease is not None:
            self.lease.check()
        if self.dirty or not self.previous:
            self.store.put_bytes(MANIFEST_NAME, encode_manifest(self.entries.values()))
        self.dirty = False
        self.last_checkpoint = time.monotonic()

    def prune(self, snapshot: dict[str, Expected], listing: dict[str, int]) -> int:
        """Delete objects the archive no longer has, and objects under objects/ nobody listed.

        They leave the manifest first, so it never lists a deleted object."""
        gone = sorted(self.entries.keys() - snapshot.keys())
        for path in gone:
            del self.entries[path]
        strays = sorted(p for p in listing if p.startswith(f"{OBJECTS}/") and p not in self.entries)
        doomed = sorted(set(gone) | set(strays))
        if not doomed:
            return 0
        self.dirty = True
        self.commit()
        self.store.delete(doomed)
        return len(doomed)


class _NotStarted(Exception):
    """An upload not begun because the store had already failed (never reported)."""


def _heads(
    store: ObjectStore, wanted: list[Expected], threads: int
) -> Iterator[tuple[Expected, ObjectInfo | None]]:
    if not wanted:
        return iter(())
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return iter(list(zip(wanted, pool.map(lambda e: store.head(e.path), wanted), strict=True)))


def _check_is_backup(store: ObjectStore, listing: dict[str, int]) -> None:
    """A prefix without a manifest must be empty, or hold only what an interrupted first run left."""
    known = (f"{OBJECTS}/", f"{QUARANTINE}/", CONFIG_NAME, AUDIT_LOG, LEASE_NAME)
    foreign = [p for p in listing if not p.startswith(known)]
    if foreign:
        raise UsageError(
            f"{store.url} holds other objects ({foreign[0]}, ...) and no pacsctl backup manifest",
            hint="back up to an empty bucket or prefix: s3://BUCKET/PREFIX",
        )


def _mirror_others(archive: Archive, store: ObjectStore, listing: dict[str, int]) -> int:
    """Upload the config, the quarantine and the audit log when new or grown (not instances, no
    manifest; kept so that nothing received is lost with the archive). Returns how many."""
    root = archive.root
    sources = [p for p in sorted((root / QUARANTINE).rglob("*")) if p.is_file()]
    sources += [p for p in (root / AUDIT_LOG,) if p.is_file()]
    sent = 0
    if (root / CONFIG_NAME).is_file():  # small, and edited in place: always sent
        store.put_file(CONFIG_NAME, root / CONFIG_NAME)
        sent += 1
    for source in sources:
        relpath = source.relative_to(root).as_posix()
        try:
            if listing.get(relpath) == os.stat(source).st_size:
                continue
            store.put_file(relpath, source)
        except FileNotFoundError:  # released from quarantine meanwhile
            continue
        sent += 1
    return sent
