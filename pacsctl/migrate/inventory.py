"""The source's studies (study-level C-FIND), walked in date slices when the node caps answers.

A PACS that caps its C-FIND answers (Orthanc's `LimitFindResults`, many at 1000 matches)
silently drops the rest. An answer of `cap` or more matches is taken as capped: its date
window is halved until each slice answers fewer than `cap` (a single day that is still capped
is reported, not hidden). Studies are keyed by StudyInstanceUID, so overlapping answers merge.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import NodeLike
from pacsctl.remote.find import query

DEFAULT_CAP = 1000
EARLIEST = dt.date(1900, 1, 1)


@dataclass(frozen=True)
class SourceStudy:
    """One study as the source's study-level C-FIND answered it."""

    study_uid: str
    study_date: str = ""
    instances: int | None = None  # NumberOfStudyRelatedInstances, when the node gives it
    patient_id: str = ""


@dataclass
class Inventory:
    """What the source holds for the selection, and how it was walked."""

    studies: dict[str, SourceStudy] = field(default_factory=dict)
    queries: int = 0
    capped_days: list[str] = field(default_factory=list)  # single days still at the cap


def _date(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%Y%m%d").date()


def _window(since: str | None, filters: Mapping[str, str]) -> tuple[dt.date, dt.date]:
    """The date range to slice: from `since` (or a StudyDate range filter) to today."""
    low, high = EARLIEST, dt.date.today()
    given = filters.get("StudyDate", "")
    if "-" in given:
        a, _, b = given.partition("-")
        low, high = (_date(a) if a else low), (_date(b) if b else high)
    if since:
        low = max(low, _date(since))
    return low, high


def inventory(
    node: NodeLike,
    filters: Mapping[str, str],
    calling_aet: str,
    since: str | None = None,
    cap: int = DEFAULT_CAP,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
    on_slice: Callable[[int], None] | None = None,
) -> Inventory:
    """The studies `node` answers for `filters` (ls syntax) and `since` (YYYYMMDD)."""
    result = Inventory()
    base = dict(filters)
    if since:  # --since and a StudyDate range: the range's upper end stays
        base["StudyDate"] = f"{since}-{base.get('StudyDate', '').partition('-')[2]}"

    def ask(flt: Mapping[str, str]) -> list[SourceStudy]:
        result.queries += 1
        found = [
            SourceStudy(
                study_uid=str(r.get("StudyInstanceUID") or ""),
                study_date=str(r.get("StudyDate") or ""),
                instances=r.get("NumberOfStudyRelatedInstances")
                if isinstance(r.get("NumberOfStudyRelatedInstances"), int)
                else None,
                patient_id=str(r.get("PatientID") or ""),
            )
            for r in query(node, "STUDY", flt, calling_aet, timeout=timeout)
        ]
        if on_slice is not None:
            on_slice(len(found))
        return [s for s in found if s.study_uid]

    def walk(low: dt.date, high: dt.date) -> None:
        if cancel is not None and cancel.requested:
            return
        flt = {**base, "StudyDate": f"{low:%Y%m%d}-{high:%Y%m%d}"}
        found = ask(flt)
        if len(found) >= cap and low < high:
            middle = low + (high - low) // 2
            walk(low, middle)
            walk(middle + dt.timedelta(days=1), high)
            return
        if len(found) >= cap:
            result.capped_days.append(f"{low:%Y%m%d}")
        for study in found:
            result.studies.setdefault(study.study_uid, study)

    found = ask(base)
    if len(found) < cap or ("StudyDate" in base and "-" not in base["StudyDate"]):
        if len(found) >= cap:
            result.capped_days.append(base["StudyDate"])
        for study in found:
            result.studies.setdefault(study.study_uid, study)
        return result
    low, high = _window(since, base)
    walk(low, high)
    return result
