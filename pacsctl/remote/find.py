"""C-FIND as an SCU, for `pacsctl query`: `ls` filters out, `ls`-shaped records back.

Identifiers are built from the same `-k KEY=VALUE` filters as `pacsctl ls`; answers are decoded
with each data set's own character set (with the fallbacks of `dicom.identifiers`, since peers
omit or mislabel it) into records shaped like `ls` records.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from pacsctl.dicom.identifiers import parse_identifier
from pacsctl.dicom.identifying import shown_value
from pacsctl.dicom.matching import LEVEL_KEYS, LEVELS, UNIQUE_KEY, RecordFilter, compile_filters
from pacsctl.errors import UsageError
from pacsctl.net import scu
from pacsctl.net.types import NodeLike, QueryModel

UTF8 = "ISO_IR 192"
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})  # a backslash is text, not a separator
_LIST_KEYS = frozenset({"ModalitiesInStudy"})  # lists in `ls` records too
# Patient keys Study Root allows at STUDY level; `ls` study rows show them.
_STUDY_PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")


def query_model(level: str) -> QueryModel:
    """Patient Root for PATIENT level (Study Root has none), Study Root otherwise."""
    return "P" if level == "PATIENT" else "S"


def return_keys(level: str) -> tuple[str, ...]:
    """The keys a query at `level` asks for: the level's keys and the unique keys above it."""
    keys: list[str] = []
    if level == "STUDY":
        keys += _STUDY_PATIENT_KEYS
    elif level != "PATIENT":
        keys += [UNIQUE_KEY[lv] for lv in LEVELS[1 : LEVELS.index(level)]]
        keys.insert(0, "PatientID")
    keys += LEVEL_KEYS[level]
    return tuple(dict.fromkeys(keys))


def build_identifier(level: str, filters: Mapping[str, str], keys: tuple[str, ...] = ()) -> Dataset:
    """A C-FIND/MOVE/GET identifier: QueryRetrieveLevel, each of `keys` empty (a return key),
    each filter with its value. Non-ASCII values make it declare UTF-8.

    Raises UsageError for a value the attribute's VR cannot hold."""
    ds = Dataset()
    if any(not v.isascii() for v in filters.values()):
        ds.SpecificCharacterSet = UTF8
    ds.QueryRetrieveLevel = level
    for keyword in dict.fromkeys([*keys, *filters]):
        vr = str(dictionary_VR(keyword)).split(" or ")[0]
        value: Any = filters.get(keyword, "")
        if value and vr not in _TEXT_VRS and "\\" in value:
            value = value.split("\\")
        if value and vr in ("US", "UL", "SS", "SL", "SV", "UV"):
            try:
                value = [int(v) for v in value] if isinstance(value, list) else int(value)
            except ValueError:
                raise UsageError(
                    f"{keyword} needs a number, got {shown_value(keyword, filters[keyword])}"
                ) from None
        elif value == "" and vr in ("US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"):
            value = None
        ds.add_new(keyword, vr, value)
    return ds


def response_record(ds: Dataset, level: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A C-FIND answer as an `ls`-shaped record: each of `keys` ("" when absent), text
    decoded with the answer's character set, integers as int, ModalitiesInStudy as a list."""
    if "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = level  # parse_identifier wants it; some peers leave it out
    decoded = parse_identifier(ds)
    # Only what was asked for: extras some peers add (RetrieveAETitle) would make records
    # differ from `ls` records.
    wanted = keys or decoded.return_keys
    return {keyword: _typed(keyword, decoded.criteria.get(keyword, "")) for keyword in wanted}


def _typed(keyword: str, text: str) -> Any:
    if keyword in _LIST_KEYS:
        return [v for v in text.split("\\") if v] if text else []
    vr = str(dictionary_VR(keyword)).split(" or ")[0]
    if text and vr in _INT_VRS and "\\" not in text:
        try:
            return int(text)
        except ValueError:
            return text
    return text


def study_level_filters(level: str, filters: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """`filters` as a node understands them at `level`, and a note for people when changed: a
    study has no Modality of its own, so at STUDY level `Modality` is sent as
    ModalitiesInStudy (as `ls` matches it); other filters go as they are."""
    out = dict(filters)
    if level != "STUDY" or "Modality" not in out or "ModalitiesInStudy" in out:
        return out, None
    out["ModalitiesInStudy"] = out.pop("Modality")
    return out, "at study level Modality is asked as ModalitiesInStudy (a study has no modality of its own)"


def query(
    node: NodeLike,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    timeout: float = 30.0,
    extra_keys: Iterable[str] = (),
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """C-FIND `node` at `level` with `ls` filters; yield one `ls`-shaped record per match.

    Records carry the level's return keys, every filtered key and `extra_keys` (asked for
    with an empty value: findscu's `-k Keyword`). With `limit`, the C-FIND is cancelled
    (C-CANCEL, then a normal release) once that many records were yielded. A study-level
    Modality filter is sent as ModalitiesInStudy (`study_level_filters`)."""
    filters, _ = study_level_filters(level, filters)
    flt = compile_filters(filters)  # the same syntax checks as `ls`, before anything goes out
    keys = tuple(dict.fromkeys([*return_keys(level), *filters, *extra_keys]))
    identifier = build_identifier(level, filters, keys)
    if limit is not None and limit <= 0:
        return
    found = 0
    answers = scu.find(node, identifier, query_model(level), calling_aet=calling_aet, timeout=timeout)
    try:
        for ds in answers:
            record = response_record(ds, level, keys)
            if agrees(flt, record):
                yield record
                found += 1
                if limit is not None and found >= limit:
                    break
    finally:
        answers.close()  # cancels a C-FIND still answering (scu.find)


def agrees(flt: RecordFilter, record: Mapping[str, Any]) -> bool:
    """False when an answered value contradicts a filter.

    Strictly hierarchical SCPs ignore keys of other levels (dcmqrscp answers every instance
    to an IMAGE-level PatientID filter), so answers are checked with `ls` matching too. A key
    the peer left empty cannot be judged and passes: peers leave out what they do not index.
    """
    for keyword, criterion in flt.criteria.items():
        value = record.get(keyword)
        if criterion.kind != "value" or value in (None, "", []):
            continue
        if not criterion.matches_value(value):
            return False
    return True
