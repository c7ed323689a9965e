"""The migration loop: inventory, reconcile with the ledger, move and prove study by study.

Per study and attempt: list the study at the source and at DEST (instance UIDs), move only
what DEST lacks, then ask DEST again until it holds every UID (`check`). The attempt is in the
ledger before anything is sent, the outcome right after it is known, so a run killed at any
point resumes where it stopped and a study done is never sent again. A done study whose source
now holds more instances than when it was done is reopened. Transient failures are retried
with backoff (`retry`); a permanent one fails the study and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from pacsctl.archive.archive import Archive
from pacsctl.errors import NetworkError, OperationInterrupted
from pacsctl.migrate import retry
from pacsctl.migrate.check import held_at
from pacsctl.migrate.commitment import commit_study
from pacsctl.migrate.inventory import DEFAULT_CAP, Inventory, SourceStudy, inventory
from pacsctl.migrate.ledger import Ledger, StudyEntry, StudyState, now
from pacsctl.migrate.listing import FIND_CONTEXT, Relational, StudyContents, list_study_on
from pacsctl.migrate.sessions import Session
from pacsctl.migrate.transfer import move_study, via_archive
from pacsctl.migrate.window import Window
from pacsctl.net import scu
from pacsctl.net.cancel import Cancellation
from pacsctl.net.commitment import CommitmentListener
from pacsctl.net.types import NodeLike
from pacsctl.remote.receiver import ArchiveReceiver

LOG = logging.getLogger(__name__)


@dataclass
class MigrateOptions:
    """How one `migrate` run goes (the CLI's options, as a library call takes them)."""

    calling_aet: str = scu.DEFAULT_CALLING_AET
    filters: Mapping[str, str] = field(default_factory=dict)
    since: str | None = None  # YYYYMMDD
    parallel: int = 1
    window: Window | None = None
    limit: int | None = None  # studies to move in this run
    dry_run: bool = False
    retry_failed: bool = False
    cap: int = DEFAULT_CAP  # C-FIND answers at which the source is taken to cap them
    backoff: retry.Backoff = field(default_factory=retry.Backoff)
    settle: float = 5.0  # seconds DEST may go without a new instance before the check ends
    timeout: float = 30.0
    via_archive: bool = False  # C-GET into the archive, then C-STORE to DEST (needs `archive`)
    commit: bool = False  # Storage Commitment by DEST before a study is done
    commit_host: str = "0.0.0.0"  # where DEST sends its N-EVENT-REPORTs (it must know us there)
    commit_port: int = 0
    commit_wait: float = 60.0  # seconds to wait for a report


@dataclass
class MigrationSummary:
    """What a run did; `studies` counts the studies of this run's selection."""

    studies: int = 0
    moved: int = 0  # done in this run
    skipped: int = 0  # done before this run
    failed: int = 0
    pending: int = 0  # not done, not failed (limit, window, interrupted, retries in progress)
    instances: int = 0  # instances proven at DEST for the studies done in this run
    queries: int = 0  # study-level C-FINDs the inventory took
    capped_days: list[str] = field(default_factory=list)
    interrupted: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """Every study of the selection is done."""
        return self.studies == self.moved + self.skipped and not self.interrupted

    def as_record(self) -> dict[str, object]:
        """The closing `"type": "summary"` record (integer counts)."""
        record: dict[str, object] = {
            "type": "summary",
            "studies": self.studies,
            "moved": self.moved,
            "skipped": self.skipped,
            "failed": self.failed,
            "pending": self.pending,
            "instances": self.instances,
            "queries": self.queries,
        }
        if self.capped_days:
            record["capped_days"] = self.capped_days
        if self.interrupted:
            record["interrupted"] = True
        record["elapsed"] = round(self.elapsed, 3)
        return record


StudyCallback = Callable[[StudyEntry], None]


def reconcile(ledger: Ledger, found: Inventory, retry_failed: bool, write: bool = True) -> list[StudyEntry]:
    """The ledger's entries for the studies `found`, new ones pending, done ones whose source
    now holds more instances reopened, failed ones reopened when `retry_failed`; written to the
    ledger (in one fsync) unless not `write`. In inventory order."""
    changed: list[StudyEntry] = []
    out: list[StudyEntry] = []
    stamp = now()
    for study in found.studies.values():
        entry = ledger.get(study.study_uid)
        if entry is None:
            entry = StudyEntry(
                StudyInstanceUID=study.study_uid,
                source_instances=study.instances,
                PatientID=study.patient_id,
                StudyDate=study.study_date,
                first_seen=stamp,
                updated=stamp,
            )
            changed.append(entry)
        elif entry.status is StudyState.DONE and _grew(study, entry):
            entry = entry.changed(
                status=StudyState.PENDING,
                reason=f"reopened: the source holds {study.instances} instances, "
                f"{entry.source_instances} when it was done",
                source_instances=study.instances,
                done_at=None,
            )
            changed.append(entry)
        elif entry.status is StudyState.FAILED and retry_failed:
            entry = entry.changed(status=StudyState.PENDING, reason=f"retrying: {entry.reason}")
            changed.append(entry)
        out.append(entry)
    if write:
        ledger.put_many(changed)
    return out


def _grew(study: SourceStudy, entry: StudyEntry) -> bool:
    return (
        study.instances is not None
        and entry.source_instances is not None
        and (study.instances > entry.source_instances)
    )


def _sleep(seconds: float, cancel: Cancellation | None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cancel is not None and cancel.requested:
            return
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _wait_for_window(window: Window | None, cancel: Cancellation | None) -> None:
    while window is not None and not (cancel is not None and cancel.requested):
        wait = window.seconds_until_open(dt.datetime.now())
        if wait <= 0:
            return
        LOG.info("outside the window %s: sleeping %.0f s", window, wait)
        _sleep(min(wait, 60.0), cancel)


class _StudyMover:
    """Moves and proves one study at a time (one per worker thread)."""

    def __init__(
        self,
        source: NodeLike,
        dest: NodeLike,
        ledger: Ledger,
        options: MigrateOptions,
        cancel: Cancellation | None,
        receiver: ArchiveReceiver | None = None,
        commitments: CommitmentListener | None = None,
    ) -> None:
        self.source, self.dest, self.ledger, self.options, self.cancel = source, dest, ledger, options, cancel
        self.receiver = receiver  # --via-archive
        self.commitments = commitments  # --commit
        self._local = threading.local()  # each worker thread's sessions to SOURCE and DEST
        self._lock = threading.Lock()
        self._sessions: list[Session] = []
        self._relational = Relational()
        # The next study's listings at both ends, taken while the current one moves: the
        # C-FINDs of the proof then cost (almost) no time on the critical path.
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="migrate-list")
        self._listed: dict[str, Future[tuple[StudyContents, StudyContents]]] = {}

    def _session(self, dest: bool) -> Session:
        name = "dest" if dest else "source"
        session: Session | None = getattr(self._local, name, None)
        if session is None:
            contexts = [build_context(FIND_CONTEXT)]
            if not dest:
                contexts.append(build_context(StudyRootQueryRetrieveInformationModelMove))
            node = self.dest if dest else self.source
            session = Session(node, contexts, self.options.calling_aet, self.options.timeout, self.cancel)
            setattr(self._local, name, session)
            with self._lock:
                self._sessions.append(session)
        return session

    def _list(self, uid: str, dest: bool = False) -> StudyContents:
        """The study at SOURCE (or DEST) over this thread's session; a session that broke
        while idle (a peer's idle time-out) is reopened once before a failure counts."""
        session = self._session(dest)
        for last in (False, True):
            try:
                return list_study_on(session.assoc(), session.node, uid, self.cancel, self._relational)
            except NetworkError:
                session.discard()
                if last:
                    raise
        raise AssertionError("unreachable")

    def list_ahead(self, uid: str) -> None:
        """Start listing `uid` at SOURCE and DEST in the background (its first attempt uses it)."""
        with self._lock:
            if uid not in self._listed:
                self._listed[uid] = self._ahead.submit(lambda: (self._list(uid), self._list(uid, dest=True)))

    def _listings(self, uid: str) -> tuple[StudyContents, StudyContents | None]:
        """The study at SOURCE and, unless SOURCE lists nothing, at DEST: listed ahead or now."""
        with self._lock:
            ahead = self._listed.pop(uid, None)
        if ahead is not None:
            return ahead.result()
        expected = self._list(uid)
        return expected, self._list(uid, dest=True) if expected.instances else None

    def close(self) -> None:
        """Stop listing ahead; release every session."""
        self._ahead.shutdown(wait=True, cancel_futures=True)
        for session in self._sessions:
            session.close()

    @property
    def stopping(self) -> bool:
        return self.cancel is not None and self.cancel.requested

    def migrate(self, entry: StudyEntry) -> StudyEntry:
        """Attempt `entry`'s study until done, failed, the attempt limit, or a stop request."""
        opts = self.options
        for attempt in range(1, opts.backoff.attempts + 1):
            _wait_for_window(opts.window, self.cancel)
            if self.stopping:
                return entry
            try:
                entry, kind = self._attempt(entry)
            except OperationInterrupted:
                return self.ledger.get(entry.StudyInstanceUID) or entry
            except NetworkError as exc:
                entry = self.ledger.get(entry.StudyInstanceUID) or entry
                entry, kind = entry.changed(reason=str(exc)), retry.of_network(exc.failure)
            if kind is None:  # done
                return entry
            if kind is retry.Kind.PERMANENT or attempt == opts.backoff.attempts:
                why = (
                    entry.reason
                    if kind is retry.Kind.PERMANENT
                    else f"gave up after {attempt} tries in this run: {entry.reason}"
                )
                entry = entry.changed(status=StudyState.FAILED, reason=why)
                self.ledger.put(entry)
                return entry
            self.ledger.put(entry)
            _sleep(opts.backoff.delay(attempt), self.cancel)
        return entry

    def _move(
        self, uid: str, missing: dict[str, str], whole: bool
    ) -> tuple[int, tuple[str, retry.Kind] | None]:
        """C-MOVE what DEST lacks; the source's final status, and the reason and kind when it
        is a failure."""
        moved = move_study(
            self._session(dest=False), self.dest.aet, uid, None if whole else missing, self.cancel
        )
        if moved.interrupted:
            raise OperationInterrupted("interrupted")
        status = moved.status if moved.status is not None else 0
        kind = retry.of_status(status)
        if kind is not None:
            return status, (f"the source refused the C-MOVE (status 0x{status:04X})", kind)
        return status, None

    def _permanent_or_broken(
        self, uid: str, expected: StudyContents, missing_before: int, reason: str
    ) -> tuple[str, retry.Kind]:
        """A failure status can mean "never" (an unknown destination) or "broke on the way"
        (Orthanc answers 0xC000 for both): when DEST cannot be asked, or holds more of the
        study than before the C-MOVE, the source could deliver and the failure is transient."""
        try:
            held = self._list(uid, dest=True)
        except NetworkError:
            return f"{reason}; {self.dest.aet} cannot be reached after it", retry.Kind.TRANSIENT
        arrived = missing_before - len(expected.missing_from(held))
        if arrived > 0:
            return f"{reason} after {arrived} instances arrived", retry.Kind.TRANSIENT
        return reason, retry.Kind.PERMANENT

    def _via_archive(self, uid: str, missing: dict[str, str]) -> tuple[str, retry.Kind] | None:
        """C-GET into the archive, C-STORE to DEST; the reason and kind when a hop failed."""
        assert self.receiver is not None
        opts = self.options
        hop = via_archive(
            self.source, self.dest, self.receiver, uid, missing, opts.calling_aet, opts.timeout, self.cancel
        )
        if hop.get.interrupted:
            raise OperationInterrupted("interrupted")
        status = hop.get.status
        kind = retry.of_status(status) if status is not None else None
        if kind is not None:
            return f"the source refused the C-GET (status 0x{status:04X})", kind
        if hop.not_archived:
            return (
                f"{len(hop.not_archived)} of {len(missing)} instances did not reach the archive",
                retry.Kind.TRANSIENT,
            )
        if hop.store_failures:
            first = hop.store_failures[0]
            why = first.error or (f"status 0x{first.status:04X}" if first.status is not None else "no answer")
            refused = all(r.status is not None for r in hop.store_failures)
            kind = (
                retry.Kind.PERMANENT
                if refused and retry.of_status(first.status or 0) is retry.Kind.PERMANENT
                else retry.Kind.TRANSIENT
            )
            return f"{len(hop.store_failures)} C-STOREs to {self.dest.aet} failed ({why})", kind
        return None

    def _attempt(self, entry: StudyEntry) -> tuple[StudyEntry, retry.Kind | None]:
        """One try; the new entry (written unless it failed) and None when done, else the
        failure's kind."""
        opts, uid = self.options, entry.StudyInstanceUID
        expected, listed = self._listings(uid)
        if not expected.instances or listed is None:
            return entry.changed(reason="the source lists no instances for the study"), retry.Kind.PERMANENT
        held = listed
        missing = expected.missing_from(held)
        entry = entry.changed(source_instances=len(expected.instances))
        status_text = ""
        if missing:
            entry = entry.changed(attempts=entry.attempts + 1)
            # Counted before anything is sent; made durable with the outcome's fsync (a crash
            # in between may undercount one attempt, never lose a study's state).
            self.ledger.put(entry, durable=False)
            if self.receiver is not None:
                failed = self._via_archive(uid, missing)
                if failed is not None:
                    return entry.changed(reason=failed[0]), failed[1]
            else:
                status, failed = self._move(uid, missing, len(missing) == len(expected.instances))
                if failed is not None and failed[1] is retry.Kind.PERMANENT:
                    failed = self._permanent_or_broken(uid, expected, len(missing), failed[0])
                if failed is not None:
                    return entry.changed(reason=failed[0]), failed[1]
                status_text = f" after the source answered 0x{status:04X}"
            held = held_at(
                lambda study: self._list(study, dest=True), expected, opts.settle, cancel=self.cancel
            )
            missing = expected.missing_from(held)
        present = len(expected.instances) - len(missing)
        if not missing and self.commitments is not None:
            refused = commit_study(
                self.commitments, self.dest, expected, opts.calling_aet, opts.commit_wait, opts.timeout
            )
            if refused is not None:
                return entry.changed(dest_instances=present, reason=refused[0], committed=False), refused[1]
            entry = entry.changed(committed=True)
        if not missing:
            done = entry.changed(status=StudyState.DONE, reason=None, dest_instances=present, done_at=now())
            self.ledger.put(done)
            return done, None
        reason = f"{len(missing)} of {len(expected.instances)} instances not at {self.dest.aet}{status_text}"
        return entry.changed(dest_instances=present, reason=reason), retry.Kind.TRANSIENT


def migrate(
    source: NodeLike,
    dest: NodeLike,
    ledger: Ledger,
    options: MigrateOptions,
    cancel: Cancellation | None = None,
    on_study: StudyCallback | None = None,
    on_plan: Callable[[int], None] | None = None,
    archive: Archive | None = None,
) -> tuple[MigrationSummary, list[StudyEntry]]:
    """Run one migration pass; return the summary and the selection's entries as they ended.

    Raises NetworkError when the source cannot be inventoried or DEST does not answer a
    C-ECHO: nothing was moved. `options.via_archive` needs the open `archive`. `on_plan(n)` is
    told how many studies will be tried, `on_study(entry)` each one's outcome as it ends (from
    worker threads)."""
    start = time.perf_counter()
    summary = MigrationSummary()
    if not options.dry_run:
        scu.echo(dest, calling_aet=options.calling_aet, timeout=options.timeout)
    found = inventory(
        source,
        options.filters,
        options.calling_aet,
        since=options.since,
        cap=options.cap,
        timeout=options.timeout,
        cancel=cancel,
    )
    summary.queries, summary.capped_days = found.queries, found.capped_days
    entries = reconcile(ledger, found, options.retry_failed, write=not options.dry_run)
    todo = [e for e in entries if e.status is StudyState.PENDING]
    if options.limit is not None:
        todo = todo[: options.limit]
    final: dict[str, StudyEntry] = {e.StudyInstanceUID: e for e in entries}
    if on_plan is not None:
        on_plan(len(todo))
    if not options.dry_run and todo:
        if options.via_archive and archive is None:
            raise ValueError("via_archive needs the archive")
        receiver = ArchiveReceiver(archive) if options.via_archive and archive is not None else None
        commitments = (
            CommitmentListener(options.calling_aet, options.commit_host, options.commit_port)
            if options.commit
            else None
        )
        mover = _StudyMover(source, dest, ledger, options, cancel, receiver, commitments)
        lock = threading.Lock()
        upcoming = iter(todo[max(1, options.parallel) :])  # the first ones start at once

        def one(entry: StudyEntry) -> None:
            if cancel is not None and cancel.requested:
                return
            with lock:
                following = next(upcoming, None)
            if following is not None:
                mover.list_ahead(following.StudyInstanceUID)
            ended = mover.migrate(entry)
            with lock:
                final[ended.StudyInstanceUID] = ended
                if ended.status is StudyState.DONE:
                    summary.moved += 1
                    summary.instances += ended.dest_instances or 0
            if on_study is not None:
                on_study(ended)

        with ThreadPoolExecutor(max(1, options.parallel), thread_name_prefix="migrate") as pool:
            try:
                for future in [pool.submit(one, e) for e in todo]:
                    future.result()
            finally:
                mover.close()
                if commitments is not None:
                    commitments.close()
                if receiver is not None:
                    receiver.close()
    summary.interrupted = cancel is not None and cancel.requested
    ended = list(final.values())
    summary.studies = len(ended)
    summary.skipped = sum(1 for e in entries if e.status is StudyState.DONE)
    summary.failed = sum(1 for e in ended if e.status is StudyState.FAILED)
    summary.pending = sum(1 for e in ended if e.status is StudyState.PENDING)
    summary.elapsed = time.perf_counter() - start
    return summary, ended
