"""`pacsctl diff A B`: what differs between two nodes, or a node and the archive.

Studies only on one side, and for studies on both: at study level their series and instance
counts, at series level their series and each series' instance count, at instance level their
SOP Instance UID sets. A count one side does not report is not compared (its absence is not a
difference); UID sets always are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pacsctl.migrate.sides import Side, StudyCounts


class DiffLevel(StrEnum):
    """How deep `diff` compares."""

    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class Difference(StrEnum):
    """What differs about one study (or series)."""

    ONLY_IN_A = "only in A"
    ONLY_IN_B = "only in B"
    SERIES_COUNT = "series count differs"
    INSTANCE_COUNT = "instance count differs"
    SERIES_ONLY_IN_A = "series only in A"
    SERIES_ONLY_IN_B = "series only in B"
    INSTANCES = "instances differ"


@dataclass(frozen=True)
class Finding:
    """One difference; `a` and `b` are the two sides' figures where there are some."""

    difference: Difference
    StudyInstanceUID: str
    SeriesInstanceUID: str = ""
    a: int | None = None
    b: int | None = None
    only_in_a: int | None = None  # instance level: SOP Instance UIDs on one side only
    only_in_b: int | None = None
    example: str = ""  # one such UID

    def as_record(self) -> dict[str, Any]:
        """The `--json` record (empty fields left out)."""
        record: dict[str, Any] = {"type": "difference", "difference": str(self.difference)}
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "a", "b", "only_in_a", "only_in_b", "example"):
            value = getattr(self, key)
            if value not in (None, ""):
                record[key] = value
        return record


@dataclass
class DiffSummary:
    """The counts of a reconciliation."""

    a: str
    b: str
    level: DiffLevel
    studies_a: int = 0
    studies_b: int = 0
    only_in_a: int = 0
    only_in_b: int = 0
    differ: int = 0  # studies on both sides that differ
    equal: int = 0

    @property
    def same(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.differ)

    def as_record(self) -> dict[str, Any]:
        return {
            "type": "summary",
            "a": self.a,
            "b": self.b,
            "level": str(self.level),
            "studies_a": self.studies_a,
            "studies_b": self.studies_b,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "differ": self.differ,
            "equal": self.equal,
        }


def _differs(x: int | None, y: int | None) -> bool:
    return x is not None and y is not None and x != y


def _study_findings(
    uid: str, side_a: Side, side_b: Side, level: DiffLevel, ca: StudyCounts, cb: StudyCounts
) -> Iterator[Finding]:
    if level is DiffLevel.STUDY:
        if _differs(ca.series, cb.series):
            yield Finding(Difference.SERIES_COUNT, uid, a=ca.series, b=cb.series)
        if _differs(ca.instances, cb.instances):
            yield Finding(Difference.INSTANCE_COUNT, uid, a=ca.instances, b=cb.instances)
        return
    if level is DiffLevel.SERIES:
        sa, sb = side_a.series(uid), side_b.series(uid)
        for series in sa.keys() - sb.keys():
            yield Finding(Difference.SERIES_ONLY_IN_A, uid, series, a=sa[series])
        for series in sb.keys() - sa.keys():
            yield Finding(Difference.SERIES_ONLY_IN_B, uid, series, b=sb[series])
        for series in sorted(sa.keys() & sb.keys()):
            if _differs(sa[series], sb[series]):
                yield Finding(Difference.INSTANCE_COUNT, uid, series, a=sa[series], b=sb[series])
        return
    ia, ib = side_a.instances(uid), side_b.instances(uid)
    if ia != ib:
        only_a, only_b = ia - ib, ib - ia
        yield Finding(
            Difference.INSTANCES,
            uid,
            a=len(ia),
            b=len(ib),
            only_in_a=len(only_a),
            only_in_b=len(only_b),
            example=min(only_a or only_b),
        )


def diff(
    side_a: Side,
    side_b: Side,
    filters: Mapping[str, str],
    level: DiffLevel = DiffLevel.STUDY,
    on_finding: Callable[[Finding], None] | None = None,
) -> DiffSummary:
    """Compare `side_a` with `side_b` for the studies matching `filters`; each difference goes
    to `on_finding` as it is found. Raises NetworkError when a node cannot be asked."""
    summary = DiffSummary(side_a.name, side_b.name, level)
    studies_a, studies_b = side_a.studies(filters), side_b.studies(filters)
    summary.studies_a, summary.studies_b = len(studies_a), len(studies_b)

    def found(finding: Finding) -> None:
        if on_finding is not None:
            on_finding(finding)

    for uid in sorted(studies_a.keys() - studies_b.keys()):
        summary.only_in_a += 1
        found(Finding(Difference.ONLY_IN_A, uid, a=studies_a[uid].instances))
    for uid in sorted(studies_b.keys() - studies_a.keys()):
        summary.only_in_b += 1
        found(Finding(Difference.ONLY_IN_B, uid, b=studies_b[uid].instances))
    for uid in sorted(studies_a.keys() & studies_b.keys()):
        findings = list(_study_findings(uid, side_a, side_b, level, studies_a[uid], studies_b[uid]))
        if findings:
            summary.differ += 1
        else:
            summary.equal += 1
        for finding in findings:
            found(finding)
    return summary
