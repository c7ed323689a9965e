"""`pacsctl send` as a library: pick the files (paths or archive instances) and C-STORE them.

Inputs are walked with the importer's `find_sources` (folders recursive, symlink loops safe,
DICOMDIR media followed case-insensitively). Files that are plainly not DICOM (a viewer, an
autorun.inf, a DICOMDIR) are skipped, not failed: a CD folder must not end in "partial failure"
because of its viewer. Anything that looks like DICOM and does not arrive is a failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsctl.archive.archive import Archive
from pacsctl.archive.search import find_records, instances_under
from pacsctl.dicom.matching import LEVEL_KEYS, LEVELS, UNIQUE_KEY, compile_filters
from pacsctl.errors import NetworkError, UsageError
from pacsctl.ingest.sources import Problem, Source, find_sources
from pacsctl.net import scu, sending
from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import NodeLike, StoreFailure, StoreResult

_DICM_OFFSET = 128


@dataclass
class SendItem:
    """One input of a send: a file to C-STORE, or why it is not sent (`skip`/`fail`)."""

    path: str
    size: int = 0
    skip: str | None = None  # not DICOM: left out, not a failure
    fail: str | None = None  # meant to be sent but cannot be read


@dataclass
class SendOutcome:
    """One input's result, as reported per failed file."""

    path: str
    ok: bool
    skipped: bool = False
    size: int = 0
    sop_instance_uid: str | None = None
    status: int | None = None
    reason: str | None = None
    interrupted: bool = False  # not sent (or not answered) because a stop was requested


@dataclass
class SendSummary:
    """Totals of a send: files = sent + failed + skipped + not_sent (a stop was requested)."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    not_sent: int = 0  # left when a stop was requested (or in flight then, unanswered)
    interrupted: bool = False
    bytes: int = 0
    elapsed: float = 0.0
    failures: list[SendOutcome] = field(default_factory=list)

    @property
    def files(self) -> int:
        return self.sent + self.failed + self.skipped + self.not_sent

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary's fields (`not_sent` and `interrupted` only after a stop)."""
        out: dict[str, Any] = {
            "files": self.files,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
        }
        if self.interrupted:
            out.update(not_sent=self.not_sent, interrupted=True)
        out.update(bytes=self.bytes, elapsed=round(self.elapsed, 3))
        return out


def collect_files(paths: Iterable[str | Path]) -> list[SendItem]:
    """Every input under `paths`: folders recursively, DICOMDIR media by their references.

    A file given by name that is not DICOM fails (the user asked for it); one met while
    walking a folder is skipped."""
    named = {str(Path(p)) for p in paths}
    items: list[SendItem] = []
    for found in find_sources([str(p) for p in paths]):
        if isinstance(found, Problem):
            items.append(SendItem(found.origin, fail=found.reason))
            continue
        items.append(_classify(found, explicit=found.path in named))
    return items


def _classify(source: Source, explicit: bool) -> SendItem:
    if source.member is not None:
        return SendItem(source.origin, skip="member of a zip file (import it, then send --study)")
    path = Path(source.path)
    if path.name.upper() == "DICOMDIR" and not explicit:
        return SendItem(source.path, skip="DICOMDIR (a media index, not an instance)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_DICM_OFFSET + 4)
    except OSError as exc:
        return SendItem(source.path, fail=f"unreadable: {exc.strerror or exc}")
    if head[_DICM_OFFSET:] == b"DICM":
        return SendItem(source.path, size)
    # No preamble: a bare data set (old modalities write these) is still DICOM if it parses.
    try:
        sending.file_info(path)
    except Exception:
        reason = "not a DICOM file"
        return (
            SendItem(source.path, size, fail=reason) if explicit else SendItem(source.path, size, skip=reason)
        )
    return SendItem(source.path, size)


def _deepest_level(keys: Iterable[str]) -> str:
    """The lowest Query/Retrieve level any key belongs to (STUDY when none does)."""
    level = "STUDY"
    for key in keys:
        for candidate in LEVELS:
            if key in LEVEL_KEYS[candidate] or key == UNIQUE_KEY[candidate]:
                if LEVELS.index(candidate) > LEVELS.index(level):
                    level = candidate
    return level


def archive_files(archive: Archive, filters: Mapping[str, str]) -> list[SendItem]:
    """The archived instances under the studies/series/instances matching `filters`.

    Filters use `pacsctl ls` matching; the level searched is the deepest one a key belongs to
    (a SeriesDescription filter selects series, a StudyDate filter whole studies)."""
    if not filters:
        raise UsageError("nothing selected in the archive", hint="give --study UID or -k KEY=VALUE")
    flt = compile_filters(filters)
    level = _deepest_level(filters)
    index = archive.index
    instances = instances_under(index, level, find_records(index, level, flt))
    found = [
        SendItem(str(archive.path_of(r["path"])), int(r.get("size") or 0)) for r in instances if r.get("path")
    ]
    if not found:  # the values are not quoted: a -k filter may hold a patient's name
        raise UsageError(
            f"no archived instance matches the selection ({', '.join(sorted(filters))})",
            hint="see `pacsctl ls` for what the archive holds; nothing was sent",
        )
    return found


def send(
    node: NodeLike,
    items: list[SendItem],
    calling_aet: str,
    on_outcome: Callable[[SendOutcome], None] | None = None,
    timeout: float = 30.0,
    associations: int = 1,
    cancel: Cancellation | None = None,
) -> SendSummary:
    """C-STORE the sendable `items` to `node` over up to `associations` associations at once;
    account for every item (`on_outcome` is called under a lock, one outcome at a time).

    Per-message overhead, not bytes, limits a Python sender, and peers answer each instance
    after their own write: several associations overlap those waits. Files are split into
    contiguous runs, so a series mostly travels on one association. A peer that refuses the
    extra associations gets their files over the ones it accepted. Raises NetworkError when
    no association can be opened at all (nothing was sent).

    Once `cancel` is requested no new file starts; what is in flight is answered or aborted
    within the grace period, and every file not sent counts as `not_sent`."""
    cancel = cancel or Cancellation()
    sender = _Sender(node, calling_aet, {i.path: i.size for i in items}, on_outcome, timeout, cancel)
    start = time.perf_counter()
    for item in items:
        if item.skip:
            sender.account(SendOutcome(item.path, False, skipped=True, size=item.size, reason=item.skip))
        elif item.fail:
            sender.account(SendOutcome(item.path, False, size=item.size, reason=item.fail))
    paths = [i.path for i in items if not (i.skip or i.fail)]
    runs = max(1, min(associations, len(paths) // 2))
    size = -(-len(paths) // runs) if paths else 0
    chunks = [paths[n * size : (n + 1) * size] for n in range(runs)] if paths else []
    errors: list[NetworkError] = []
    leftovers: list[str] = []

    def work(chunk: list[str]) -> None:
        try:
            sender.send(chunk)
        except NetworkError as exc:  # this association was refused; the others may be fine
            errors.append(exc)
            leftovers.extend(chunk)

    # Every run in a thread of its own; this thread only waits, so a signal handler that
    # requests the stop runs at once (the threads see it before their next file).
    threads = [
        threading.Thread(target=work, args=(c,), name=f"pacsctl-send-{n}") for n, c in enumerate(chunks)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    if chunks and len(errors) == len(chunks) and not cancel.requested:
        raise errors[0]  # not a single association: the node is unreachable (exit 4)
    if leftovers and not cancel.requested:
        try:
            sender.send(leftovers)
            leftovers = []
        except NetworkError as exc:
            errors.append(exc)
    for path in leftovers:  # refused associations' files that no other association took
        sender.not_sent(path, str(errors[-1]), interrupted=cancel.requested)
    sender.summary.interrupted = cancel.requested
    sender.summary.elapsed = time.perf_counter() - start
    return sender.summary


class _Sender:
    """Sends runs of files to one node and accounts for each, from several threads."""

    def __init__(
        self,
        node: NodeLike,
        calling_aet: str,
        sizes: dict[str, int],
        on_outcome: Callable[[SendOutcome], None] | None,
        timeout: float,
        cancel: Cancellation,
    ) -> None:
        self.node, self.calling_aet, self.sizes = node, calling_aet, sizes
        self.on_outcome, self.timeout, self.cancel = on_outcome, timeout, cancel
        self.summary = SendSummary()
        self._lock = threading.Lock()

    def account(self, outcome: SendOutcome) -> None:
        """Count one outcome and report it."""
        with self._lock:
            if outcome.skipped:
                self.summary.skipped += 1
            elif outcome.ok:
                self.summary.sent += 1
                self.summary.bytes += outcome.size
            elif outcome.interrupted:
                self.summary.not_sent += 1
            else:
                self.summary.failed += 1
                self.summary.failures.append(outcome)
            if self.on_outcome:
                self.on_outcome(outcome)

    def not_sent(
        self, path: str, reason: str | None, uid: str | None = None, interrupted: bool = False
    ) -> None:
        """Account for a file that did not reach the peer."""
        size = self.sizes.get(path, 0)
        self.account(
            SendOutcome(path, False, size=size, sop_instance_uid=uid, reason=reason, interrupted=interrupted)
        )

    def _result(self, res: StoreResult) -> None:
        self.account(
            SendOutcome(
                res.path,
                res.ok,
                size=self.sizes.get(res.path, 0),
                sop_instance_uid=res.sop_instance_uid,
                status=res.status,
                reason=None if res.ok else (res.error or _status_text(res.status)),
                interrupted=res.failure is StoreFailure.INTERRUPTED,
            )
        )

    def _store(self, paths: list[str], progress: Callable[[StoreResult], None]) -> None:
        scu.store(
            self.node,
            paths,
            calling_aet=self.calling_aet,
            progress=progress,
            timeout=self.timeout,
            cancel=self.cancel,
        )

    def send(self, paths: list[str]) -> None:
        """Send `paths` on one association at a time, accounting for each file.

        Raises NetworkError only when the first association cannot be opened (nothing of
        `paths` was sent or accounted then)."""
        lost: list[StoreResult] = []  # never tried: the association had gone
        unanswered: list[StoreResult] = []  # sent, no answer: the culprit, or a victim of its abort

        def on_result(res: StoreResult) -> None:
            if res.failure is StoreFailure.NOT_SENT:
                lost.append(res)
            elif res.failure is StoreFailure.NO_RESPONSE:
                unanswered.append(res)
            else:
                self._result(res)

        pending, first = paths, True
        while pending:
            lost.clear()
            try:
                self._store(pending, on_result)
            except NetworkError as exc:
                if first and not self.cancel.requested:
                    raise
                lost[:] = [
                    StoreResult(p, None, None, str(exc), failure=StoreFailure.NOT_SENT) for p in pending
                ]
                break
            first = False
            # A peer that chokes on one file drops the association: the files after it were
            # never tried, so they go again on a fresh association.
            if not lost or len(lost) == len(pending) or self.cancel.requested:
                break
            pending = [r.path for r in lost]
        for res in lost:
            self.not_sent(res.path, res.error, res.sop_instance_uid, self.cancel.requested)
        # A file sent while the peer was aborting goes unanswered through no fault of its own;
        # each unanswered file gets one more go, alone, so a real culprit cannot sink another.
        for res in unanswered:
            if self.cancel.requested:
                self.not_sent(res.path, res.error, res.sop_instance_uid, interrupted=True)
                continue
            try:
                self._store([res.path], self._result)
            except NetworkError as exc:
                self.not_sent(res.path, str(exc), res.sop_instance_uid)


def _status_text(status: int | None) -> str:
    if status is None:
        return "no response"
    return f"refused by the peer (status 0x{status:04X})"
