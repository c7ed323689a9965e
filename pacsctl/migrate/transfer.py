"""Moving one study's instances SOURCE -> DEST: by C-MOVE (the source must know DEST's AE), or
`--via-archive`: C-GET into the local archive (every instance hashed and made durable on
arrival, by the archive's own receive path), then C-STORE from there to DEST.

A study DEST holds none of goes in one study-level C-MOVE; a study DEST holds part of (a run
killed half-way, a source that answered Success before it had sent everything) gets only its
missing instances, one IMAGE-level C-MOVE per series with their SOP Instance UIDs as a list:
nothing DEST already holds is sent again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.dataset import Dataset

from pacsctl.archive.archive import Archive
from pacsctl.errors import NetworkError
from pacsctl.migrate.sessions import Session
from pacsctl.net import scu
from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import AssocInfo, NodeLike, StoreResult
from pacsctl.remote.receiver import ArchiveReceiver
from pacsctl.remote.retrieve import RetrieveSummary

_UIDS_PER_MOVE = 1000  # keeps one identifier well under any peer's PDU and parser limits


def move_study(
    source: Session,
    dest_aet: str,
    study_uid: str,
    only: Mapping[str, str] | None = None,
    cancel: Cancellation | None = None,
) -> RetrieveSummary:
    """C-MOVE `study_uid` (or, with `only`, just those SOP Instance UID -> Series Instance UID)
    over the `source` session (Study Root Move context) to `dest_aet`; the peer's counts
    summed, its worst final status kept. Raises NetworkError (the session discarded)."""
    summary = RetrieveSummary()
    for identifier in _identifiers(study_uid, only):
        if cancel is not None and cancel.requested:
            break
        try:
            counts = scu.move_on(source.assoc(), source.node, dest_aet, identifier, "S", cancel=cancel)
        except NetworkError:
            source.discard()
            raise
        summary.add(counts)
        summary.matched += 1
    summary.interrupted = cancel is not None and cancel.requested
    return summary


def _identifiers(study_uid: str, only: Mapping[str, str] | None) -> list[Dataset]:
    if only is None:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        return [ds]
    by_series: dict[str, list[str]] = {}
    for uid, series in only.items():
        by_series.setdefault(series, []).append(uid)
    out = []
    for series, uids in by_series.items():
        for start in range(0, len(uids), _UIDS_PER_MOVE):
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series
            chunk = uids[start : start + _UIDS_PER_MOVE]
            ds.SOPInstanceUID = chunk if len(chunk) > 1 else chunk[0]
            out.append(ds)
    return out


@dataclass
class ArchiveHop:
    """What a `--via-archive` transfer did: the C-GET's counts, what did not reach the archive,
    and the C-STOREs to DEST that failed."""

    get: RetrieveSummary
    not_archived: list[str]
    store_failures: list[StoreResult]


def via_archive(
    source: NodeLike,
    dest: NodeLike,
    receiver: ArchiveReceiver,
    study_uid: str,
    only: Mapping[str, str],
    calling_aet: str,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> ArchiveHop:
    """C-GET the study into the archive unless it already holds every one of `only`, then
    C-STORE `only` (SOP Instance UID -> series) from the archive to `dest`."""
    summary = RetrieveSummary()
    if any(not receiver.has(uid) for uid in only):
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        receiver.source = AssocInfo(
            calling_aet=source.aet, called_aet=calling_aet, peer_host=source.host, peer_port=int(source.port)
        )
        summary.add(scu.get(source, ds, receiver, "S", calling_aet, timeout=timeout, cancel=cancel))
        summary.matched = 1
    summary.interrupted = cancel is not None and cancel.requested
    not_archived = [uid for uid in only if not receiver.has(uid)]
    paths = [receiver.archive.path_of(Archive.object_relpath(uid)) for uid in only if uid not in not_archived]
    failures: list[StoreResult] = []
    if paths and not summary.interrupted:
        results = scu.store(dest, paths, calling_aet, timeout=timeout, cancel=cancel)
        failures = [r for r in results if not r.ok]
    return ArchiveHop(summary, not_archived, failures)
