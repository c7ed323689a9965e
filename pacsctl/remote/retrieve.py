"""C-MOVE and C-GET as an SCU, for `pacsctl move` and `get`.

- A retrieve selected by anything but unique keys is first resolved with a C-FIND into one
  C-MOVE/C-GET per match: many SCPs (Orthanc among them) retrieve by unique keys only.
- What arrives in our own archive is counted and checked on disk; a peer's final status alone
  is never trusted (some answer Success before the images went out, DESIGN.md).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from pacsctl.dicom.matching import LEVELS, UNIQUE_KEY, compile_filters
from pacsctl.errors import NetworkError, NetworkFailure, OperationInterrupted
from pacsctl.net import scu
from pacsctl.net.cancel import Cancellation
from pacsctl.net.sending import get_contexts
from pacsctl.net.types import (
    STATUS_CANCEL,
    STATUS_MOVE_DESTINATION_UNKNOWN,
    STATUS_SUCCESS,
    AssocInfo,
    NodeLike,
    RetrieveCounts,
    StatusCategory,
    status_category,
)
from pacsctl.remote.find import agrees, build_identifier, query_model, response_record
from pacsctl.remote.receiver import ArchiveReceiver

LOG = logging.getLogger(__name__)


def _path_keys(level: str) -> list[str]:
    """Unique keys a retrieve at `level` must carry (Study Root; Patient Root at PATIENT)."""
    if level == "PATIENT":
        return ["PatientID"]
    return [UNIQUE_KEY[lv] for lv in LEVELS[1 : LEVELS.index(level) + 1]]


def retrieve_identifiers(
    node: NodeLike,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> list[Dataset]:
    """One unique-key identifier per entity to retrieve.

    Filters on exactly the unique keys of the path are used as they are (a UID list split
    into one identifier per UID); anything else is resolved with a C-FIND first."""
    flt = compile_filters(filters)  # syntax errors before anything goes out
    path = _path_keys(level)
    own = UNIQUE_KEY[level]
    direct = (
        set(filters) == set(path)
        and all(filters[k] and not any(c in filters[k] for c in "*?\\") for k in path if k != own)
        and filters[own]
        and not any(c in filters[own] for c in "*?")
    )
    if direct:
        parents = {k: filters[k] for k in path if k != own}
        return [
            _unique_identifier(level, {**parents, own: v})
            for v in dict.fromkeys(filters[own].split("\\"))
            if v
        ]
    keys = tuple(dict.fromkeys([*path, *filters]))
    found = scu.find(
        node,
        build_identifier(level, filters, keys),
        query_model(level),
        calling_aet=calling_aet,
        timeout=timeout,
        cancel=cancel,
    )
    targets: dict[tuple[str, ...], Dataset] = {}
    for ds in found:
        record = response_record(ds, level, keys)
        if not agrees(flt, record):
            continue
        values = tuple(str(record.get(k, "") or "").strip() for k in path)
        if all(values) and values not in targets:
            targets[values] = _unique_identifier(level, dict(zip(path, values, strict=True)))
    return list(targets.values())


def _unique_identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def expected_instances(
    node: NodeLike,
    identifier: Dataset,
    calling_aet: str,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of every instance under one retrieve identifier,
    found level by level with C-FIND (hierarchical, so strict SCPs answer too)."""
    level = str(identifier.QueryRetrieveLevel)
    keys = {k: str(identifier.get(k)) for k in _path_keys(level)}
    below = level if level == "IMAGE" else LEVELS[LEVELS.index(level) + 1]
    wanted = ("SOPInstanceUID", "SOPClassUID") if below == "IMAGE" else (UNIQUE_KEY[below],)
    request = build_identifier(
        below, {k: v for k, v in keys.items() if k != UNIQUE_KEY[below]} if level != "IMAGE" else keys, wanted
    )
    found: dict[str, str] = {}
    for ds in scu.find(
        node, request, query_model(level), calling_aet=calling_aet, timeout=timeout, cancel=cancel
    ):
        value = str(ds.get(UNIQUE_KEY[below], "") or "").strip()
        if not value:
            continue
        if below == "IMAGE":
            found[value] = str(ds.get("SOPClassUID", "") or "").strip()
        else:
            # Patient Root's PatientID does not belong in the Study Root finds further down.
            parents = {} if level == "PATIENT" else keys
            child = _unique_identifier(below, {**parents, UNIQUE_KEY[below]: value})
            found.update(expected_instances(node, child, calling_aet, timeout, cancel))
    return found


@dataclass
class RetrieveSummary:
    """What a move or get did. Peer figures are summed over the sub-retrieves; `received`,
    `stored`, `duplicates` and `missing` are what we saw arrive in our own archive (None when
    the destination is another node, so nothing can be counted here, or when the peer refused
    outright). When another process received (`counted_in_archive`: a running `pacsctl serve`
    holds our port), arrivals cannot be seen, only which instances the archive holds now:
    `received`/`stored` are the ones that are new since the move began, `already_archived`
    those that were there before (whether the peer sent them again cannot be told)."""

    matched: int = 0  # entities retrieved (e.g. studies), after resolving the filters
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0
    status: int | None = None  # the worst final status (Success only if every one was)
    failed_uids: list[str] = field(default_factory=list)
    expected: int | None = None  # instances the peer lists for the selection (C-FIND)
    received: int | None = None
    stored: int | None = None  # received and now in the archive (new)
    duplicates: int | None = None  # received, already in the archive
    conflicts: int | None = None  # received, other bytes than the archived copy (quarantined)
    store_failed: int | None = None  # received but refused or quarantined by our archive
    missing: list[str] = field(default_factory=list)  # expected but not in the archive
    counted_in_archive: bool = False
    already_archived: int | None = None  # counted_in_archive: held before the move began
    refused_by_us: list[dict[str, Any]] = field(default_factory=list)  # our rejects of the peer
    interrupted: bool = False  # a stop was requested: what is counted is what was done
    elapsed: float = 0.0

    def add(self, counts: RetrieveCounts) -> None:
        """Fold one sub-retrieve's final counts in."""
        self.completed += counts.completed
        self.failed += counts.failed
        self.warning += counts.warning
        self.remaining += counts.remaining
        self.failed_uids += counts.failed_uids
        if self.status is None or _severity(counts.status) > _severity(self.status):
            self.status = counts.status

    @property
    def counted_locally(self) -> bool:
        return self.received is not None

    @property
    def ok(self) -> bool:
        """Everything the peer reported went well and, when we could count, all of it arrived
        and was stored."""
        # A Warning final status with no failed sub-operation means delivered with warnings
        # (our own archive answers one for a conflicting copy): not a failure by itself.
        warned = self.status is not None and status_category(self.status) is StatusCategory.WARNING
        if self.failed or self.remaining or not (self.status in (None, STATUS_SUCCESS) or warned):
            return False
        if self.interrupted:
            return False
        if not self.counted_locally:
            return True
        arrived = (self.stored or 0) + (self.duplicates or 0) + (self.conflicts or 0)
        arrived += self.already_archived or 0
        # A conflict (a different image under an archived UID, kept in quarantine) is a
        # partial failure, exit 3, as for `import`.
        return (
            not self.store_failed
            and not self.missing
            and not self.conflicts
            and arrived == self.completed + self.warning
            and (self.expected is None or arrived >= self.expected)
        )

    @property
    def refused(self) -> bool:
        """The peer answered a failure and nothing was sent (not a partial failure)."""
        failure = (
            self.status is not None
            and self.status not in (STATUS_SUCCESS, STATUS_CANCEL)
            and status_category(self.status) is not StatusCategory.WARNING
        )
        return failure and not (self.completed or self.warning or self.failed)

    @property
    def destination_unknown(self) -> bool:
        return self.status == STATUS_MOVE_DESTINATION_UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        """JSON summary fields (local counts only when they were counted)."""
        out: dict[str, Any] = {
            "matched": self.matched,
            "completed": self.completed,
            "failed": self.failed,
            "warning": self.warning,
            "remaining": self.remaining,
            "status": None if self.status is None else f"0x{self.status:04X}",
        }
        if self.counted_locally:
            out.update(
                received=self.received,
                stored=self.stored,
                duplicates=self.duplicates,
                conflicts=self.conflicts,
                store_failed=self.store_failed,
                missing=len(self.missing),
            )
            if self.expected is not None:
                out["expected"] = self.expected
            if self.counted_in_archive:
                out.update(counted_in_archive=True, already_archived=self.already_archived)
        if self.refused_by_us:
            out["refused_by_us"] = len(self.refused_by_us)
        if self.interrupted:
            out["interrupted"] = True
        if self.failed_uids:
            out["failed_uids"] = self.failed_uids
        out["elapsed"] = round(self.elapsed, 3)
        return out


def refusal_error(summary: RetrieveSummary, node: NodeLike, destination: str) -> NetworkError | None:
    """The error for a retrieve the peer refused outright (nothing was sent), else None: a
    network failure (exit 4) like a rejected association, typed so that callers can tell an
    unknown destination (permanent) from another failure status."""
    if summary.destination_unknown:
        return NetworkError(
            f"{node.aet} does not know the destination AE title {destination!r} (status 0xA801)",
            hint=f"add {destination} with its host and port to {node.aet}'s known modalities",
            failure=NetworkFailure.DESTINATION_UNKNOWN,
        )
    if summary.refused:
        return NetworkError(
            f"{node.aet} refused the retrieve (status 0x{summary.status:04X}), nothing was sent",
            hint=f"see {node.aet}'s log; for a C-MOVE, is {destination} among its known modalities?",
            failure=NetworkFailure.STATUS,
        )
    return None


def _severity(status: int | None) -> int:
    """0 Success, 1 Warning, 2 Cancel or Failure: the summary keeps the worst final status."""
    if status == STATUS_SUCCESS:
        return 0
    return 1 if status is not None and status_category(status) is StatusCategory.WARNING else 2


def move(
    node: NodeLike,
    destination_aet: str,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    receiver: ArchiveReceiver | None = None,
    on_progress: Callable[[RetrieveSummary], None] | None = None,
    settle: float = 10.0,
    timeout: float = 30.0,
    listening: bool = True,
    cancel: Cancellation | None = None,
) -> RetrieveSummary:
    """C-MOVE the selection from `node` to `destination_aet`.

    With a `receiver` (the destination is our own archive), the instances the peer lists for
    the selection are checked in the archive afterwards; once the peer's final answer is in,
    arrivals are awaited up to `settle` seconds of silence, since some peers answer Success
    before their last C-STORE arrived. `listening` False: another process (a running
    `pacsctl serve`) receives for us, so arrivals are counted from the archive alone.

    Once `cancel` is requested no further C-MOVE starts and the running one is cancelled
    (`scu.move`); the summary, marked `interrupted`, counts what was done. A stop during the
    C-FINDs that resolve the selection raises OperationInterrupted (nothing was moved)."""
    start = time.perf_counter()
    started = dt.datetime.now(dt.UTC)
    summary = RetrieveSummary()
    try:
        targets = retrieve_identifiers(node, level, filters, calling_aet, timeout, cancel)
        summary.matched = len(targets)
        expected: set[str] | None = None
        before: set[str] = set()
        if receiver is not None:
            expected = set()
            for ident in targets:
                expected |= set(expected_instances(node, ident, calling_aet, timeout, cancel))
            summary.expected = len(expected)
            before = {uid for uid in expected if receiver.has(uid)}
    except OperationInterrupted:
        raise OperationInterrupted("move interrupted while listing what to move: nothing was moved") from None
    for ident in targets:
        if cancel is not None and cancel.requested:
            break
        counts = scu.move(
            node,
            destination_aet,
            ident,
            query_model(level),
            calling_aet=calling_aet,
            timeout=timeout,
            cancel=cancel,
        )
        summary.add(counts)
        if on_progress:
            on_progress(summary)
        if counts.status == STATUS_MOVE_DESTINATION_UNKNOWN:
            break  # the same answer for every other target
    summary.interrupted = cancel is not None and cancel.requested
    # A refusal sent nothing: no arrivals to wait for, no local counts that could mislead.
    if receiver is not None and expected is not None and not summary.refused:
        if not summary.interrupted:
            _await_arrivals(receiver, expected, settle)
        _fill_local_counts(summary, receiver, expected, before, from_archive=not listening, since=started)
    summary.elapsed = time.perf_counter() - start
    return summary


def _await_arrivals(receiver: ArchiveReceiver, expected: set[str], settle: float) -> None:
    """Wait until every expected instance is in the archive, or nothing new came for
    `settle` seconds."""
    last_seen, last_change = -1, time.monotonic()
    while True:
        present = sum(1 for uid in expected if receiver.has(uid))
        if present >= len(expected):
            return
        now = time.monotonic()
        if present != last_seen:
            last_seen, last_change = present, now
        elif now - last_change >= settle:
            return
        time.sleep(0.2)


def _fill_local_counts(
    summary: RetrieveSummary,
    receiver: ArchiveReceiver,
    expected: set[str] | None,
    before: Set[str] = frozenset(),
    from_archive: bool = False,
    since: dt.datetime | None = None,
) -> None:
    """Local counts from the receiver; or, `from_archive` (another process received), from
    which of the `expected` instances are now in the archive."""
    wanted = expected | receiver.received if expected is not None else receiver.received
    summary.missing = sorted(uid for uid in wanted if not receiver.has(uid))
    if from_archive and expected is not None:
        # Only what is new can be known to have arrived; what was there before may or may
        # not have been sent again.
        present = expected.difference(summary.missing)
        summary.counted_in_archive = True
        summary.received = summary.stored = len(present - before)
        # A copy serve refused as a conflict leaves the archived one in place: find it in the
        # quarantine (which serve records as a conflict), not among those held before.
        conflicts = receiver.archive.conflicts_since(since, present & before) if since else set()
        summary.already_archived = len(present & before) - len(conflicts)
        summary.conflicts = len(conflicts)
        summary.received += len(conflicts)
        summary.duplicates = summary.store_failed = 0
        return
    summary.received = len(receiver.received)
    summary.stored = receiver.stored
    summary.duplicates = receiver.duplicates
    summary.conflicts = receiver.conflicts
    summary.store_failed = receiver.store_failed


def get(
    node: NodeLike,
    receiver: ArchiveReceiver,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    on_progress: Callable[[RetrieveSummary], None] | None = None,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> RetrieveSummary:
    """C-GET the selection from `node` straight into the receiver's archive and count what
    arrived and was stored, next to the peer's own counts. `cancel` as for `move`.

    Each target's instances are listed first (C-FIND): their SOP classes decide the storage
    contexts offered, and every listed instance must be in the archive afterwards. A peer
    that cannot list them is still retrieved from, with the default contexts."""
    start = time.perf_counter()
    summary = RetrieveSummary()
    try:
        targets = retrieve_identifiers(node, level, filters, calling_aet, timeout, cancel)
    except OperationInterrupted:
        raise OperationInterrupted(
            "get interrupted while listing what to get: nothing was retrieved"
        ) from None
    summary.matched = len(targets)
    receiver.source = AssocInfo(
        calling_aet=node.aet, called_aet=calling_aet, peer_host=node.host, peer_port=int(node.port)
    )
    expected: set[str] | None = set()
    for ident in targets:
        if cancel is not None and cancel.requested:
            break
        try:
            listed = expected_instances(node, ident, calling_aet, timeout, cancel)
        except OperationInterrupted:
            break
        except NetworkError as exc:  # no IMAGE-level C-FIND there: count what the peer says
            LOG.warning("cannot list the instances to get (%s); relying on the peer's counts", exc)
            listed = {}
            expected = None
        if expected is not None:
            expected |= set(listed)
        counts = scu.get(
            node,
            ident,
            receiver,
            query_model(level),
            calling_aet=calling_aet,
            timeout=timeout,
            storage_contexts=get_contexts(listed.values()),
            cancel=cancel,
            audit=receiver.note_audit,
        )
        summary.add(counts)
        if on_progress:
            on_progress(summary)
    receiver.close()
    summary.interrupted = cancel is not None and cancel.requested
    summary.expected = None if expected is None else len(expected)
    _fill_local_counts(summary, receiver, expected)
    summary.elapsed = time.perf_counter() - start
    return summary
