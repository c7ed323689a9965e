"""What one side of a `diff` holds, level by level: a remote node (C-FIND) or the local archive
(its index). Both answer in the same shapes, so the comparison does not know which is which."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pacsctl.archive.archive import Archive
from pacsctl.archive.search import find_records
from pacsctl.dicom.matching import compile_filters
from pacsctl.migrate.listing import list_study
from pacsctl.net.types import NodeLike
from pacsctl.remote.find import query


@dataclass(frozen=True)
class StudyCounts:
    """A study's counts as one side reports them (None: the side did not say)."""

    series: int | None
    instances: int | None


class Side(Protocol):
    """One side of a reconciliation."""

    name: str

    def studies(self, filters: Mapping[str, str]) -> dict[str, StudyCounts]:
        """StudyInstanceUID -> counts, for the studies matching `filters` (ls syntax)."""
        ...

    def series(self, study_uid: str) -> dict[str, int | None]:
        """SeriesInstanceUID -> instance count, for one study."""
        ...

    def instances(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs of one study."""
        ...


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


class NodeSide:
    """A remote node, asked by C-FIND."""

    def __init__(self, node: NodeLike, calling_aet: str, timeout: float = 30.0) -> None:
        self.node, self.calling_aet, self.timeout = node, calling_aet, timeout
        self.name = str(node)

    def studies(self, filters: Mapping[str, str]) -> dict[str, StudyCounts]:
        return {
            str(r["StudyInstanceUID"]): StudyCounts(
                _int(r.get("NumberOfStudyRelatedSeries")), _int(r.get("NumberOfStudyRelatedInstances"))
            )
            for r in query(self.node, "STUDY", filters, self.calling_aet, timeout=self.timeout)
            if r.get("StudyInstanceUID")
        }

    def series(self, study_uid: str) -> dict[str, int | None]:
        found = query(
            self.node, "SERIES", {"StudyInstanceUID": study_uid}, self.calling_aet, timeout=self.timeout
        )
        return {
            str(r["SeriesInstanceUID"]): _int(r.get("NumberOfSeriesRelatedInstances"))
            for r in found
            if r.get("SeriesInstanceUID")
        }

    def instances(self, study_uid: str) -> set[str]:
        return set(list_study(self.node, study_uid, self.calling_aet, timeout=self.timeout).instances)


class ArchiveSide:
    """The local archive, read from its index."""

    name = "archive"

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def studies(self, filters: Mapping[str, str]) -> dict[str, StudyCounts]:
        records = find_records(self.archive.index, "STUDY", compile_filters(filters))
        return {
            str(r["StudyInstanceUID"]): StudyCounts(
                _int(r.get("NumberOfStudyRelatedSeries")), _int(r.get("NumberOfStudyRelatedInstances"))
            )
            for r in records
        }

    def series(self, study_uid: str) -> dict[str, int | None]:
        records = find_records(self.archive.index, "SERIES", compile_filters({"StudyInstanceUID": study_uid}))
        return {str(r["SeriesInstanceUID"]): _int(r.get("NumberOfSeriesRelatedInstances")) for r in records}

    def instances(self, study_uid: str) -> set[str]:
        records = find_records(self.archive.index, "IMAGE", compile_filters({"StudyInstanceUID": study_uid}))
        return {str(r["SOPInstanceUID"]) for r in records}
