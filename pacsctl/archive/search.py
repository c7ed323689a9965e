"""Find index records at a query level: the one search behind `pacsctl ls` and C-FIND."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pacsctl.dicom.matching import LEVEL_KEYS, LEVELS, UNIQUE_KEY, RecordFilter, compile_filters
from pacsctl.storage.index import Index


def find_records(index: Index, level: str, flt: RecordFilter) -> list[dict[str, Any]]:
    """Records at `level` (PATIENT, STUDY, SERIES or IMAGE) that match `flt`.

    Exact PatientID / StudyInstanceUID / SeriesInstanceUID criteria go straight to their index
    shards; every other criterion filters what those return. At STUDY level a Modality
    criterion is matched against the study's ModalitiesInStudy (study records hold no
    Modality: it is a series attribute, and would match nothing).
    """
    matches = record_matcher(level, flt)
    return [record for record in candidate_records(index, level, flt) if matches(record)]


def record_matcher(level: str, flt: RecordFilter) -> Callable[[Mapping[str, Any]], bool]:
    """The test a record of `level` must pass for `flt`: `flt.matches`, except that at STUDY
    level a Modality criterion is matched against the study's ModalitiesInStudy (shared by
    `ls` and the C-FIND server, so both answer a study-level Modality alike)."""
    modality = flt.criteria.get("Modality") if level == "STUDY" else None
    if modality is None:
        return flt.matches
    rest = RecordFilter(c for keyword, c in flt.criteria.items() if keyword != "Modality")
    return lambda record: rest.matches(record) and modality.matches_value(record.get("ModalitiesInStudy"))


def candidate_records(index: Index, level: str, flt: RecordFilter) -> list[dict[str, Any]]:
    """The records at `level` that `flt`'s exact keys select, not yet matched against its other
    criteria: a snapshot (fresh dicts) that may be matched without holding any lock."""
    patient_ids = flt.exact("PatientID")
    study_uids = flt.exact("StudyInstanceUID")
    series_uids = flt.exact("SeriesInstanceUID")
    if level == "PATIENT":
        records = index.patients(patient_ids)
    elif level == "STUDY":
        records = index.studies(patient_ids, study_uids)
    elif level == "SERIES":
        records = index.series(patient_ids, study_uids, series_uids)
    else:
        records = index.instances(patient_ids, study_uids, series_uids)
    return records


def instances_under(index: Index, level: str, matched: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instance records of everything under `matched` records of `level` (for a retrieve or
    a send: a matched study stands for all its instances)."""
    if level == "IMAGE":
        return matched
    if level == "PATIENT":
        ids = sorted({str(r.get("PatientID", "")) for r in matched})
        return index.instances(patient_ids=ids) if ids else []
    studies = sorted({str(r["StudyInstanceUID"]) for r in matched})
    if level == "STUDY":
        return index.instances(study_uids=studies) if studies else []
    series = sorted({str(r["SeriesInstanceUID"]) for r in matched})
    return index.instances(study_uids=studies, series_uids=series) if series else []


def deepest_level(keys: Iterable[str]) -> str:
    """The lowest Query/Retrieve level any key belongs to (STUDY when none does): a
    SeriesDescription filter selects series, a StudyDate filter whole studies."""
    level = "STUDY"
    for key in keys:
        for candidate in LEVELS:
            if key in LEVEL_KEYS[candidate] or key == UNIQUE_KEY[candidate]:
                if LEVELS.index(candidate) > LEVELS.index(level):
                    level = candidate
    return level


def instances_matching(index: Index, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    """The instance records under the studies/series/instances that `filters` (`pacsctl ls`
    matching) select at their deepest level; every instance when `filters` is empty."""
    if not filters:
        return index.instances()
    level = deepest_level(filters)
    return instances_under(index, level, find_records(index, level, compile_filters(filters)))
