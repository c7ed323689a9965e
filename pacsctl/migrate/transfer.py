"""Moving one study's instances SOURCE -> DEST by C-MOVE (the source must know DEST's AE).

A study DEST holds none of goes in one study-level C-MOVE; a study DEST holds part of (a run
killed half-way, a source that answered Success before it had sent everything) gets only its
missing instances, one IMAGE-level C-MOVE per series with their SOP Instance UIDs as a list:
nothing DEST already holds is sent again.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from pacsctl.net import scu
from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import NodeLike
from pacsctl.remote.retrieve import RetrieveSummary

_UIDS_PER_MOVE = 1000  # keeps one identifier well under any peer's PDU and parser limits


def move_study(
    source: NodeLike,
    dest_aet: str,
    study_uid: str,
    calling_aet: str,
    only: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> RetrieveSummary:
    """C-MOVE `study_uid` (or, with `only`, just those SOP Instance UID -> Series Instance UID)
    from `source` to `dest_aet`; the peer's counts summed, its worst final status kept."""
    summary = RetrieveSummary()
    for identifier in _identifiers(study_uid, only):
        if cancel is not None and cancel.requested:
            break
        summary.add(scu.move(source, dest_aet, identifier, "S", calling_aet, timeout=timeout, cancel=cancel))
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
