"""`verify --backup s3://...`: the bucket's listing against its manifest, then re-hashing by download.

The listing (one request per 1000 objects) finds what is missing, of the wrong size, or there
and nobody listed; downloading re-hashes every object (or a random share, `sample`) against the
manifest's SHA-256, never against ETags. Problems are named as for folder backups
(`integrity/findings`). With the archive at hand the manifest is compared with its index too,
and `repair` uploads again, from the archive, every object found damaged or missing whose
archive copy still has the hash recorded at ingest.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pacsctl.archive.archive import OBJECTS, Archive
from pacsctl.errors import UsageError
from pacsctl.integrity import findings as F
from pacsctl.integrity.filecheck import Expected, recorded_files
from pacsctl.integrity.findings import Finding
from pacsctl.integrity.manifest import MANIFEST_NAME
from pacsctl.integrity.offsite import DEFAULT_UPLOADS, read_bucket_manifest, upload_again
from pacsctl.integrity.verify import (
    FULL,
    QUICK,
    VerifyReport,
    VerifySummary,
    _full_set,
    _mode_name,
    compare_with_archive,
)
from pacsctl.storage.lease import Lease
from pacsctl.storage.objects import ObjectStore, ObjectStoreError, ObjectStoreFailure

Progress = Callable[[int, int], None]  # (files done, bytes read) since the last call


def verify_bucket(
    store: ObjectStore,
    archive: Archive | None,
    *,
    mode: str = FULL,
    sample: float | None = None,
    jobs: int | None = None,
    repair: bool = False,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = lambda files, nbytes: None,
    wait: bool = False,
) -> VerifyReport:
    """Check a bucket backup against its manifest, and the manifest against the archive's index.

    With `repair`, the whole run holds the prefix's lease (as a backup does): refused (LockBusy)
    while a backup runs, or with `wait` waits for it."""
    if repair and archive is None:
        raise UsageError(
            "--repair copies from the archive, and there is none here", hint="give the archive with --archive"
        )
    if mode not in (FULL, QUICK):
        raise UsageError(f"unknown verify mode {mode!r}")
    if sample is not None and not 0 < sample <= 1:
        raise UsageError(f"--sample must be a fraction in (0, 1], not {sample}")
    if repair:
        with Lease(store, "verify --repair", wait=wait) as lease:
            return _verify_bucket(store, archive, mode, sample, jobs, on_total, progress, lease)
    return _verify_bucket(store, archive, mode, sample, jobs, on_total, progress, None)


def _verify_bucket(
    store: ObjectStore,
    archive: Archive | None,
    mode: str,
    sample: float | None,
    jobs: int | None,
    on_total: Callable[[int], None],
    progress: Progress,
    lease: Lease | None,
) -> VerifyReport:
    started = time.monotonic()
    manifest = read_bucket_manifest(store)
    if manifest is None:
        raise UsageError(
            f"{store.url} has no {MANIFEST_NAME}: not a pacsctl backup",
            hint="make one with `pacsctl backup s3://BUCKET/PREFIX`",
        )
    report = VerifyReport(summary=VerifySummary(F.BACKUP, _mode_name(mode, sample)))
    s = report.summary
    report.findings += [
        Finding(MANIFEST_NAME, F.MANIFEST_DAMAGED, text, where=F.BACKUP) for text in manifest.damage
    ]
    listing = {o.relpath: o.size for o in store.iter_objects()}
    expected = sorted(manifest.entries.values(), key=lambda e: e.path)
    on_total(len(expected))
    present: list[Expected] = []
    for entry in expected:
        size = listing.get(entry.path)
        if size is None:
            report.findings.append(_finding(entry, F.MISSING, "listed in the manifest, no such object"))
        elif size != entry.size:
            report.findings.append(
                _finding(entry, F.WRONG_SIZE, f"{size} bytes, the manifest says {entry.size}")
            )
        else:
            present.append(entry)
    chosen = _full_set(len(present), mode, sample)
    to_hash = [e for i, e in enumerate(present) if i in chosen]
    progress(len(expected) - len(to_hash), 0)
    with ThreadPoolExecutor(max_workers=jobs or DEFAULT_UPLOADS) as pool:
        for _entry, finding, nbytes in pool.map(lambda e: _rehash(store, e), to_hash):
            s.hashed += 1
            s.bytes += nbytes
            if finding is not None:
                report.findings.append(finding)
            progress(1, nbytes)
    s.checked = len(expected)
    unknown = sorted(p for p in listing if p.startswith(f"{OBJECTS}/") and p not in manifest.entries)
    report.findings += [
        Finding(p, F.UNKNOWN_FILE, "in the bucket, not in the backup manifest", where=F.BACKUP)
        for p in unknown
    ]
    if archive is not None:
        recorded = recorded_files(archive.index.iter_instances())
        report.findings += compare_with_archive(manifest.entries, recorded)
        if lease is not None:  # repairing
            _upload_damaged(archive, store, recorded, report.findings, jobs or DEFAULT_UPLOADS, lease)
    return report.finish(started)


def _rehash(store: ObjectStore, entry: Expected) -> tuple[Expected, Finding | None, int]:
    """Download one object and compare its SHA-256 with the manifest's."""
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in store.iter_chunks(entry.path):
            digest.update(chunk)
            size += len(chunk)
    except ObjectStoreError as exc:
        if exc.failure is ObjectStoreFailure.NOT_FOUND:  # deleted since the listing
            return entry, _finding(entry, F.MISSING, "listed in the manifest, no such object"), size
        raise
    if size != entry.size:
        return entry, _finding(entry, F.WRONG_SIZE, f"{size} bytes, the manifest says {entry.size}"), size
    if digest.hexdigest() != entry.sha256:
        return (
            entry,
            _finding(entry, F.HASH_MISMATCH, "the object's bytes differ from the manifest's SHA-256"),
            size,
        )
    return entry, None, size


def _upload_damaged(
    archive: Archive,
    store: ObjectStore,
    recorded: dict[str, Expected],
    found: list[Finding],
    jobs: int,
    lease: Lease,
) -> None:
    """Upload again from the archive the objects found damaged; each finding says what happened."""
    damaged = [f for f in found if f.where == F.BACKUP and f.problem in F.DAMAGE]
    for finding in damaged:
        if finding.path not in recorded:
            finding.action = "not repaired: the archive no longer has it"
    wanted = [recorded[f.path] for f in damaged if f.path in recorded]
    if not wanted:
        return
    failed = upload_again(archive, store, wanted, jobs, lease)
    for finding in damaged:
        if finding.path in recorded:
            finding.action = f"not repaired: {failed[finding.path]}" if finding.path in failed else F.RECOPIED


def _finding(entry: Expected, problem: F.Problem, detail: str) -> Finding:
    return Finding(entry.path, problem, detail, entry.sop_instance_uid, F.BACKUP)
