"""`verify`: prove the archive (or a backup of it) holds exactly what was recorded, byte for byte.

A full check re-hashes every file against the SHA-256 recorded at ingest and parses its DICOM
header from the same bytes, in worker processes (one read per file). Index and files are
compared both ways: a recorded file that is gone, a file nobody recorded. Temp files of
interrupted writes are removed (they were never acknowledged). `--quick` checks presence and
size only; `sample` re-hashes a random share and quick-checks the rest.

Safe while `serve` writes: the index is read first and the files walked after, and a file that
looks unknown is looked up in the index again before it is reported (it may have been stored
during the check).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pacsctl.archive.archive import OBJECTS, TMP, Archive
from pacsctl.errors import UsageError
from pacsctl.integrity import findings as F
from pacsctl.integrity.filecheck import (
    Expected,
    check_full,
    check_quick,
    clean_leftovers,
    header_uid,
    load_header_scan,
    read_content,
    read_head,
    recorded_files,
    walk_objects,
)
from pacsctl.integrity.findings import Finding
from pacsctl.integrity.manifest import MANIFEST_NAME, locked_backup, read_manifest
from pacsctl.parallel import chunk_size, chunked, default_jobs, map_unordered
from pacsctl.storage import files
from pacsctl.summary import SummaryRecord

FULL, QUICK = "full", "quick"
RECENT_SECONDS = 10.0  # a file this new may be between its rename and its index entry
IN_FLIGHT_WAIT = 1.0  # how long to give such a writer before calling the file unknown

Progress = Callable[[int, int], None]  # (files done, bytes read) since the last call


class VerifyStatus(StrEnum):
    """What a check found, in one word (the JSON summary's `status`; exit 0 for ok and cleaned)."""

    OK = "ok"  # nothing found
    CLEANED = "cleaned"  # only leftover temp files, removed (never acknowledged): still ok
    REPAIRED = "repaired"  # damage restored from a backup: exit 3, look at that disk
    PROBLEMS = "problems"  # something is wrong


@dataclass
class VerifySummary(SummaryRecord):
    """The closing record of a check. `problems` counts what is still wrong afterwards."""

    target: str
    mode: str
    checked: int = 0
    hashed: int = 0
    bytes: int = 0
    problems: int = 0
    repaired: int = 0
    cleaned: int = 0
    elapsed: float = 0.0
    ok: bool = True
    status: VerifyStatus = VerifyStatus.OK


@dataclass
class VerifyReport:
    """Every finding, in path order, and the summary."""

    findings: list[Finding] = field(default_factory=list)
    summary: VerifySummary = field(default_factory=lambda: VerifySummary(F.ARCHIVE, FULL))

    def finish(self, started: float) -> VerifyReport:
        """Sort the findings and count them into the summary."""
        self.findings.sort(key=lambda f: (f.where, f.path, f.problem))
        s = self.summary
        s.cleaned = sum(f.action == F.REMOVED for f in self.findings)
        s.repaired = sum(f.action in F.REPAIRED for f in self.findings)
        s.problems = sum(not f.resolved for f in self.findings)
        # A repair means damage happened (look at that disk); a removed leftover is routine.
        s.ok = s.problems == 0 and s.repaired == 0
        s.status = (
            VerifyStatus.PROBLEMS
            if s.problems
            else VerifyStatus.REPAIRED
            if s.repaired
            else VerifyStatus.CLEANED
            if s.cleaned
            else VerifyStatus.OK
        )
        s.elapsed = time.monotonic() - started
        return self


def _no_progress(_files: int, _bytes: int) -> None:
    pass


# -- the archive ------------------------------------------------------------------------------


def verify_archive(
    archive: Archive,
    *,
    mode: str = FULL,
    sample: float | None = None,
    jobs: int | None = None,
    repair_from: Path | None = None,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = _no_progress,
) -> VerifyReport:
    """Check the archive's files against its index; repair damage from `repair_from` if given.

    `on_total(n)` is called once the number of files to check is known, then `progress` as
    files are done.
    """
    started = time.monotonic()
    if repair_from is not None and not (repair_from / OBJECTS).is_dir():
        raise UsageError(
            f"{repair_from} is not a pacsctl backup (no {OBJECTS}/ folder)",
            hint="give the DEST of `pacsctl backup DEST`",
        )
    if repair_from is not None:
        files.require_writable(
            archive.root, (archive.tmp_dir, archive.root / OBJECTS), "--repair-from writes into it"
        )
    report = VerifyReport(summary=VerifySummary(F.ARCHIVE, _mode_name(mode, sample)))
    report.findings += clean_leftovers(archive.root / TMP, archive.root, F.ARCHIVE)
    # A damaged index file is reported, and the check goes on without it: the instances it
    # listed show up as unknown files, which `reindex` indexes again.
    damaged = archive.index.damaged_files()
    report.findings += [_index_damaged(archive.root, path) for path in damaged]
    skip = bool(damaged) or None
    recorded = recorded_files(archive.index.iter_instances(skip_damaged=skip))
    on_disk = set(walk_objects(archive.root, OBJECTS))
    expected = sorted(recorded.values(), key=lambda e: e.path)
    on_total(len(expected))
    found, report.summary.hashed, report.summary.bytes = check_files(
        archive.root, expected, mode, sample, jobs, F.ARCHIVE, progress
    )
    report.summary.checked = len(expected)
    unknown = on_disk - recorded.keys()
    if unknown or found:  # stored or replaced during the check? then the index knows by now
        fresh = recorded_files(archive.index.iter_instances(skip_damaged=skip))
        unknown -= fresh.keys()
        found = _recheck_changed(archive.root, found, recorded, fresh, mode)
    unknown = settle_unknown(archive, unknown, skip)
    report.findings += found
    report.findings += [
        _unknown_file(archive.root, path, F.ARCHIVE, "not in the index") for path in sorted(unknown)
    ]
    if repair_from is not None:
        for finding in report.findings:
            if finding.problem in F.DAMAGE and finding.where == F.ARCHIVE:
                repair(archive, recorded[finding.path], repair_from, finding)
    return report.finish(started)


def settle_unknown(archive: Archive, unknown: set[str], skip_damaged: bool | None = None) -> set[str]:
    """Of files not in the index, those still not there after their writers had a moment."""
    if unknown and _any_recent(archive.root, unknown):  # renamed a moment ago, index entry on its way
        time.sleep(IN_FLIGHT_WAIT)
        unknown = unknown - recorded_files(archive.index.iter_instances(skip_damaged=skip_damaged)).keys()
    return unknown


def unindexed_files(archive: Archive, known: Iterable[str]) -> list[Finding]:
    """Files in objects/ the index does not know (beyond `known` paths), as findings."""
    unknown = set(walk_objects(archive.root, OBJECTS)).difference(known)
    if unknown:
        unknown -= recorded_files(archive.index.iter_instances()).keys()
    unknown = settle_unknown(archive, unknown)
    return [_unknown_file(archive.root, path, F.ARCHIVE, "not in the index") for path in sorted(unknown)]


def _any_recent(root: Path, paths: Iterable[str]) -> bool:
    now = time.time()
    for path in paths:
        try:
            if now - os.stat(root / path).st_ctime < RECENT_SECONDS:
                return True
        except FileNotFoundError:
            continue
    return False


def _recheck_changed(
    root: Path, found: list[Finding], recorded: dict[str, Expected], fresh: dict[str, Expected], mode: str
) -> list[Finding]:
    """Check again, against its new record, a file replaced during the check (on-conflict replace)."""
    out = []
    for original in found:
        finding: Finding | None = original
        new = fresh.get(original.path)
        old = recorded.get(original.path)
        if original.problem in F.DAMAGE and new is not None and old is not None and new.sha256 != old.sha256:
            recorded[original.path] = new
            finding = check_quick(root, new) if mode == QUICK else check_full(root, new)[0]
        if finding is not None:
            out.append(finding)
    return out


def repair(archive: Archive, expected: Expected, backup: Path, finding: Finding) -> None:
    """Restore one damaged or missing file from the backup copy, if its hash is the recorded one.

    The copy is staged in the archive's tmp/, hashed while written, and only a byte-identical
    copy is renamed into place (atomically, durably). `finding.action` says what happened.
    """
    source = backup / expected.path
    try:
        with open(source, "rb") as fh:
            staged = files.stage(archive.tmp_dir, iter(lambda: fh.read(1 << 20), b""), fsync=True)
    except FileNotFoundError:
        finding.action = "not repaired: no copy in the backup"
        return
    except OSError as exc:
        finding.action = f"not repaired: backup copy unreadable ({exc.strerror or exc})"
        return
    if (staged.size, staged.sha256) != (expected.size, expected.sha256):
        staged.temp_path.unlink(missing_ok=True)
        finding.action = "not repaired: the backup copy differs from the recorded hash too"
        return
    target = archive.path_of(expected.path)
    try:
        files.publish(staged, target, replace=True)
        files.fsync_dir(target.parent)
    except OSError as exc:  # e.g. a folder in the file's place
        staged.temp_path.unlink(missing_ok=True)
        finding.action = f"not repaired: cannot replace the file ({exc.strerror or exc})"
        return
    finding.action = F.RESTORED


# -- a backup ---------------------------------------------------------------------------------


def verify_backup(
    dest: Path,
    archive: Archive | None,
    *,
    mode: str = FULL,
    sample: float | None = None,
    jobs: int | None = None,
    repair: bool = False,
    on_total: Callable[[int], None] = lambda total: None,
    progress: Progress = _no_progress,
    wait: bool = False,
) -> VerifyReport:
    """Check a backup folder against its manifest, and the manifest against the archive's index.

    Without an archive (gone, or elsewhere) the backup is checked on its own. With `repair`,
    damaged copies are copied again from the archive (only bytes matching the hash recorded at
    ingest are written), which `backup` alone does not do for a copy of the right size.
    """
    if repair and archive is None:
        raise UsageError(
            "--repair copies from the archive, and there is none here", hint="give the archive with --archive"
        )
    started = time.monotonic()
    manifest = read_manifest(dest)
    if manifest is None:
        raise UsageError(
            f"{dest} has no {MANIFEST_NAME}: not a pacsctl backup", hint="make one with `pacsctl backup DEST`"
        )
    report = VerifyReport(summary=VerifySummary(F.BACKUP, _mode_name(mode, sample)))
    # One lock over the check and the repair: no backup may run in between (LockBusy, exit 1).
    with locked_backup(dest, "verify --repair" if repair else "verify", wait=wait):
        report.findings += [
            Finding(MANIFEST_NAME, F.MANIFEST_DAMAGED, text, where=F.BACKUP) for text in manifest.damage
        ]
        report.findings += clean_leftovers(dest / TMP, dest, F.BACKUP)
        expected = sorted(manifest.entries.values(), key=lambda e: e.path)
        on_total(len(expected))
        found, report.summary.hashed, report.summary.bytes = check_files(
            dest, expected, mode, sample, jobs, F.BACKUP, progress
        )
        report.summary.checked = len(expected)
        report.findings += found
        unknown = set(walk_objects(dest, OBJECTS)) - manifest.entries.keys()
        report.findings += [
            _unknown_file(dest, path, F.BACKUP, "not in the backup manifest") for path in sorted(unknown)
        ]
        if archive is not None:
            recorded = recorded_files(archive.index.iter_instances())
            report.findings += compare_with_archive(manifest.entries, recorded)
            if repair:
                _recopy_damaged(archive, dest, recorded, report.findings)
    return report.finish(started)


def _recopy_damaged(
    archive: Archive, dest: Path, recorded: dict[str, Expected], found: list[Finding]
) -> None:
    """Copy again from the archive the backup copies found damaged; each finding says what happened."""
    from pacsctl.integrity.backup import recopy  # backup builds on this module

    damaged = [f for f in found if f.where == F.BACKUP and f.problem in F.DAMAGE]
    for finding in damaged:
        if finding.path not in recorded:
            finding.action = "not repaired: the archive no longer has it"
    wanted = [recorded[f.path] for f in damaged if f.path in recorded]
    if not wanted:
        return
    failed = recopy(archive, dest, wanted)  # under the lock verify_backup holds
    for finding in damaged:
        if finding.path in recorded:
            finding.action = f"not repaired: {failed[finding.path]}" if finding.path in failed else F.RECOPIED


def compare_with_archive(backed_up: dict[str, Expected], recorded: dict[str, Expected]) -> list[Finding]:
    """What the backup lacks or holds differently from the archive, and what the archive lost."""
    out: list[Finding] = []
    for path, rec in recorded.items():
        copy = backed_up.get(path)
        if copy is None:
            out.append(
                Finding(
                    path,
                    F.NOT_BACKED_UP,
                    "in the archive, not in the backup (run `pacsctl backup`)",
                    rec.sop_instance_uid,
                    F.BACKUP,
                )
            )
        elif (copy.size, copy.sha256) != (rec.size, rec.sha256):
            out.append(
                Finding(
                    path,
                    F.DIFFERS_FROM_ARCHIVE,
                    "the backup holds other bytes than the archive recorded",
                    rec.sop_instance_uid,
                    F.BACKUP,
                )
            )
    for path in backed_up.keys() - recorded.keys():
        copy = backed_up[path]
        out.append(
            Finding(
                path,
                F.NOT_IN_ARCHIVE,
                "backed up, but not in the archive's index",
                copy.sop_instance_uid,
                F.ARCHIVE,
            )
        )
    return out


# -- shared -----------------------------------------------------------------------------------


def check_files(
    root: Path,
    expected: Sequence[Expected],
    mode: str,
    sample: float | None,
    jobs: int | None,
    where: str,
    progress: Progress = _no_progress,
) -> tuple[list[Finding], int, int]:
    """Check `expected` files under `root` in parallel. Returns (findings, files hashed, bytes read)."""
    if mode not in (FULL, QUICK):
        raise UsageError(f"unknown verify mode {mode!r}")
    if sample is not None and not 0 < sample <= 1:
        raise UsageError(f"--sample must be a fraction in (0, 1], not {sample}")
    jobs = jobs or default_jobs()
    full = _full_set(len(expected), mode, sample)
    tasks = [(e, i in full) for i, e in enumerate(expected)]
    found: list[Finding] = []
    hashed = nbytes = 0
    size = chunk_size(len(tasks), jobs)
    # Quick checks are a stat each: not worth a worker process.
    workers = jobs if full and len(full) > size else 1
    if full:
        load_header_scan()  # before the fork: one import shared by every worker
    for chunk_found, chunk_files, chunk_hashed, chunk_bytes in map_unordered(
        _check_chunk, ((str(root), where, chunk) for chunk in chunked(tasks, size)), workers
    ):
        found += chunk_found
        hashed += chunk_hashed
        nbytes += chunk_bytes
        progress(chunk_files, chunk_bytes)
    return found, hashed, nbytes


def _full_set(count: int, mode: str, sample: float | None) -> set[int] | range:
    """Indexes of the files to re-hash: all (full), none (quick), or a random share (sample)."""
    if mode == QUICK:
        return set()
    if sample is None or sample >= 1:
        return range(count)
    return set(random.sample(range(count), max(1, round(count * sample)) if count else 0))


def _check_chunk(
    task: tuple[str, str, Sequence[tuple[Expected, bool]]],
) -> tuple[list[Finding], int, int, int]:
    """Worker: check one chunk of files. Returns (findings, files, files hashed, bytes read)."""
    root, where, items = Path(task[0]), task[1], task[2]
    found: list[Finding] = []
    hashed = nbytes = 0
    for expected, full in items:
        if full:
            finding, read = check_full(root, expected, where)
            hashed += 1
            nbytes += read
        else:
            finding = check_quick(root, expected, where)
        if finding is not None:
            found.append(finding)
    return found, len(items), hashed, nbytes


def _unknown_file(root: Path, path: str, where: str, detail: str) -> Finding:
    """A finding for a file nobody recorded, naming its SOP Instance UID when it is DICOM, and
    (in the archive) what `reindex` will do with it: index it, move it to its place, or move it
    to the quarantine."""
    archive = where == F.ARCHIVE
    try:
        try:
            uid = header_uid(read_head(root / path))
        except ValueError:  # a header longer than the prefix? then the whole file
            uid = header_uid(read_content(root / path).head)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        hint = (
            "; `pacsctl reindex` moves it to the quarantine"
            if archive and not isinstance(exc, OSError)
            else ""
        )
        return Finding(
            path, F.UNKNOWN_FILE, f"{detail}; not a readable DICOM file ({reason}){hint}", where=where
        )
    right = Archive.object_relpath(uid)
    if archive and right != path:
        hint = f"; misplaced (it belongs at {right}): `pacsctl reindex` moves it there"
    else:
        hint = " (run `pacsctl reindex` to index it)" if archive else ""
    return Finding(path, F.UNKNOWN_FILE, detail + hint, uid, where)


def _index_damaged(root: Path, path: Path) -> Finding:
    return Finding(
        path.relative_to(root).as_posix(),
        F.INDEX_DAMAGED,
        "index file cut short or garbled (run `pacsctl reindex`)",
        where=F.ARCHIVE,
    )


def _mode_name(mode: str, sample: float | None) -> str:
    if mode == FULL and sample is not None and sample < 1:
        return f"sample {sample:g}"
    return mode


def records(report: VerifyReport) -> Iterable[dict]:
    """The report as JSON records: one per finding, then the summary."""
    for finding in report.findings:
        yield finding.as_dict()
    yield {"type": "summary", "command": "verify", **report.summary.as_dict()}
