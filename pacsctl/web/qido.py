"""QIDO-RS (PS3.18 10.6): the study, series and instance searches, matched exactly as C-FIND and
`pacsctl ls` match (`archive.search.find_records`, `dicom.matching`), answered in the DICOM
JSON model. A scoped token sees only its studies: its study list narrows the index lookup, and
every record is checked against its scope."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pacsctl.archive.search import find_records
from pacsctl.dicom.attributes import PATIENT_FIELDS
from pacsctl.dicom.matching import LEVEL_KEYS, QueryLevel, compile_filters, resolve_keyword
from pacsctl.errors import InvalidQueryError
from pacsctl.storage.index import Index
from pacsctl.web.dicomjson import record_to_json
from pacsctl.web.tokens import Token

# Query parameters that are not attribute filters (PS3.18 8.3.4); `token` carries viewer links.
_CONTROL = frozenset({"includefield", "limit", "offset", "fuzzymatching", "token"})
MAX_LIMIT = 10_000  # the most results one answer holds, whatever `limit` asks
_NOT_RETURNED = frozenset({"path", "size", "sha256", "ReplacedStudyInstanceUID", "ReplacedSeriesInstanceUID"})

# The attributes each level returns by default (PS3.18 Table 10.6.3-3..5, as far as the index
# holds them); the levels above are included for /series and /instances searches.
_DEFAULT_KEYS: Mapping[QueryLevel, tuple[str, ...]] = {
    QueryLevel.STUDY: (*PATIENT_FIELDS, *LEVEL_KEYS["STUDY"]),
    QueryLevel.SERIES: ("StudyInstanceUID", *LEVEL_KEYS["SERIES"]),
    QueryLevel.IMAGE: ("StudyInstanceUID", "SeriesInstanceUID", *LEVEL_KEYS["IMAGE"], "TransferSyntaxUID"),
}
_SORT_KEYS: Mapping[QueryLevel, tuple[str, ...]] = {
    QueryLevel.STUDY: ("StudyDate", "StudyTime", "StudyInstanceUID"),
    QueryLevel.SERIES: ("StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID"),
    QueryLevel.IMAGE: ("SeriesInstanceUID", "InstanceNumber", "SOPInstanceUID"),
}


@dataclass(frozen=True)
class QidoQuery:
    """A parsed QIDO-RS request: filters by keyword, the extra return keys, paging."""

    level: QueryLevel
    filters: dict[str, str]
    include: tuple[str, ...] = ()
    include_all: bool = False
    limit: int = MAX_LIMIT
    offset: int = 0
    keys: tuple[str, ...] = field(default=())  # the filter keywords, for the audit log

    @classmethod
    def parse(
        cls, level: QueryLevel, params: Iterable[tuple[str, str]], path_uids: Mapping[str, str]
    ) -> QidoQuery:
        """From the URL's query parameters (repeats allowed) and the UIDs of its path.
        Raises InvalidQueryError (400) for an unknown key, a bad value or bad paging."""
        filters: dict[str, str] = {}
        include: list[str] = []
        include_all = False
        limit, offset = MAX_LIMIT, 0
        for name, value in params:
            if name == "includefield":
                for item in value.split(","):
                    item = item.strip()
                    if item.lower() == "all":
                        include_all = True
                    elif item:
                        include.append(resolve_keyword(item))
            elif name == "limit":
                limit = min(_non_negative(name, value), MAX_LIMIT)
            elif name == "offset":
                offset = _non_negative(name, value)
            elif name in _CONTROL:
                continue  # fuzzymatching: accepted; PN matching ignores case already
            else:
                keyword = resolve_keyword(name)
                if keyword in filters:
                    raise InvalidQueryError(
                        f"{keyword} is given more than once", hint="separate alternatives with a backslash"
                    )
                filters[keyword] = value
        for keyword, uid in path_uids.items():
            if keyword in filters and filters[keyword] not in ("", "*", uid):
                raise InvalidQueryError(f"{keyword} in the query differs from the one in the path")
            filters[keyword] = uid
        compile_filters(filters)  # every value checked here: a bad one is a 400, not a 500
        return cls(level, filters, tuple(include), include_all, limit, offset, tuple(filters))


def _non_negative(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise InvalidQueryError(f"{name} must be a whole number >= 0")
    return number


def search(index: Index, query: QidoQuery, token: Token, base_url: str) -> list[dict[str, Any]]:
    """The matching records within the token's scope, sorted and paged, in the JSON model."""
    filters = dict(query.filters)
    if token.studies and filters.get("StudyInstanceUID", "") in ("", "*"):
        filters["StudyInstanceUID"] = "\\".join(token.studies)  # straight to the token's studies
    if token.patient is not None and filters.get("PatientID", "") in ("", "*"):
        filters["PatientID"] = token.patient
    records = find_records(index, query.level.value, compile_filters(filters))
    if token.scoped:
        records = [
            r for r in records if token.allows_study(str(r.get("StudyInstanceUID", "")), r.get("PatientID"))
        ]
    records.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in _SORT_KEYS[query.level]))
    page = records[query.offset : query.offset + query.limit]
    return [_answer(r, query, base_url) for r in page]


def _sortable(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, "" if value is None else str(value))


def _answer(record: Mapping[str, Any], query: QidoQuery, base_url: str) -> dict[str, Any]:
    if query.include_all:
        keys: Iterable[str] = (k for k in record if k not in _NOT_RETURNED)
    else:
        keys = dict.fromkeys((*_DEFAULT_KEYS[query.level], *query.keys, *query.include))
    out = record_to_json(record, keys)
    out["00081190"] = {"vr": "UR", "Value": [base_url + _retrieve_path(record, query.level)]}
    return out


def _retrieve_path(record: Mapping[str, Any], level: QueryLevel) -> str:
    path = f"/studies/{record.get('StudyInstanceUID', '')}"
    if level in (QueryLevel.SERIES, QueryLevel.IMAGE):
        path += f"/series/{record.get('SeriesInstanceUID', '')}"
    if level is QueryLevel.IMAGE:
        path += f"/instances/{record.get('SOPInstanceUID', '')}"
    return path
