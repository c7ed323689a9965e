"""What the archive and its audit log know about a study (`pacsctl show`): patient, dates,
series with their counts and sizes, where the files are, when they arrived and from whom, and
the last backup and the last verify of the archive (and whether each came after the study's
last arrival).

The study's instance records come from the index; arrival times are the files' modification
times (the moment the archive published them); senders are the audit log's `store` records
naming the study's instances.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pacsctl.archive.archive import AUDIT_LOG, OBJECTS, Archive
from pacsctl.archive.audit import AuditEvent, read_audit
from pacsctl.dicom.attributes import PATIENT_FIELDS, SERIES_FIELDS, STUDY_FIELDS
from pacsctl.errors import UsageError


@dataclass
class SeriesView:
    """One series of a study as stored."""

    fields: dict[str, Any]
    instances: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)  # archive-relative, by instance number


@dataclass
class StudyView:
    """One study as the archive holds it (see the module docstring)."""

    fields: dict[str, Any]  # patient and study attributes
    series: list[SeriesView]
    instances: int = 0
    bytes: int = 0
    files_under: str = ""
    missing_files: int = 0
    first_arrival: str = ""
    last_arrival: str = ""
    senders: dict[str, int] = field(default_factory=dict)  # calling AE title -> instances stored
    last_backup: dict[str, Any] | None = None  # time, dest, covers (after the last arrival)
    last_verify: dict[str, Any] | None = None  # time, mode, status, covers
    sop_instance_uids: list[str] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: DICOM keywords for the attributes, the rest in plain words."""
        record = {**self.fields}
        body = asdict(self)
        del body["fields"], body["series"], body["sop_instance_uids"]
        record.update(body)
        record["series"] = [
            {**s.fields, "instances": s.instances, "bytes": s.bytes, "paths": s.paths} for s in self.series
        ]
        return record


def describe(archive: Archive, uid: str | None = None, patient_id: str | None = None) -> list[StudyView]:
    """The studies a study, series or instance UID belongs to (one), or a patient's studies.
    Raises UsageError when the archive holds nothing of that name (the ID is not quoted)."""
    index = archive.index
    if patient_id is not None:
        studies = index.studies(patient_ids=[patient_id])
        if not studies:
            raise UsageError(
                "the archive holds no study of that patient", hint="see `pacsctl ls --level patient`"
            )
        uids = [str(s["StudyInstanceUID"]) for s in studies]
    elif uid:
        uids = [_study_of(archive, uid)]
    else:
        raise UsageError("nothing to show", hint="give a study, series or instance UID, or --patient ID")
    views = [_view(archive, study_uid) for study_uid in uids]
    _add_audit(archive, views)
    return views


def _study_of(archive: Archive, uid: str) -> str:
    index = archive.index
    if index.studies(study_uids=[uid]):
        return uid
    instance = archive.instance_record(uid)
    if instance is not None:
        return str(instance["StudyInstanceUID"])
    for series in index.series():
        if series.get("SeriesInstanceUID") == uid:
            return str(series["StudyInstanceUID"])
    raise UsageError(f"the archive holds no study, series or instance {uid}", hint="see `pacsctl ls`")


def _view(archive: Archive, study_uid: str) -> StudyView:
    index = archive.index
    study = index.studies(study_uids=[study_uid])[0]
    fields = {k: study.get(k, "") for k in (*PATIENT_FIELDS, *STUDY_FIELDS)}
    fields["ModalitiesInStudy"] = study.get("ModalitiesInStudy", "")
    by_series: dict[str, SeriesView] = {}
    mtimes: list[float] = []
    view = StudyView(fields, [], files_under=str(archive.path_of(OBJECTS)))
    records = sorted(
        index.instances(study_uids=[study_uid]),
        key=lambda r: (_number(r.get("InstanceNumber")), r["SOPInstanceUID"]),
    )
    for record in records:
        series_uid = str(record["SeriesInstanceUID"])
        series = by_series.get(series_uid)
        if series is None:
            series = by_series[series_uid] = SeriesView({k: record.get(k, "") for k in SERIES_FIELDS})
        view.sop_instance_uids.append(str(record["SOPInstanceUID"]))
        series.instances += 1
        series.bytes += int(record.get("size") or 0)
        if record.get("path"):
            series.paths.append(str(record["path"]))
            try:
                mtimes.append(os.stat(archive.path_of(record["path"])).st_mtime)
            except OSError:
                view.missing_files += 1
    view.series = sorted(
        by_series.values(),
        key=lambda s: (_number(s.fields.get("SeriesNumber")), s.fields["SeriesInstanceUID"]),
    )
    view.instances = sum(s.instances for s in view.series)
    view.bytes = sum(s.bytes for s in view.series)
    if mtimes:
        view.first_arrival, view.last_arrival = _iso(min(mtimes)), _iso(max(mtimes))
    return view


def _add_audit(archive: Archive, views: Iterable[StudyView]) -> None:
    """Senders from `store` records, the last `backup` record: one pass over the log."""
    views = list(views)
    owner = {sop_uid: n for n, view in enumerate(views) for sop_uid in view.sop_instance_uids}
    senders: list[Counter[str]] = [Counter() for _ in views]
    last_backup: dict[str, Any] | None = None
    last_verify: dict[str, Any] | None = None
    for record in read_audit(archive.root / AUDIT_LOG):
        event = record.get("event")
        if event == AuditEvent.STORE and str(record.get("status", "")) in ("0x0000", "0", "0xB000"):
            n = owner.get(str(record.get("SOPInstanceUID", "")))
            if n is not None:
                senders[n][str(record.get("calling_aet", "")).strip() or "?"] += 1
        elif event == AuditEvent.BACKUP:
            last_backup = record
        elif event == AuditEvent.VERIFY:
            last_verify = record
    for view, counted in zip(views, senders, strict=True):
        view.senders = dict(counted.most_common())
    for view in views:
        if last_verify is not None:
            when = str(last_verify.get("time", ""))
            view.last_verify = {
                "time": when,
                "mode": last_verify.get("mode", ""),
                "status": last_verify.get("status", ""),
                "covers": bool(view.last_arrival) and _parse(when) >= _parse(view.last_arrival),
            }
        if last_backup is not None:
            when = str(last_backup.get("time", ""))
            view.last_backup = {
                "time": when,
                "dest": last_backup.get("dest", ""),
                "failed": last_backup.get("failed", 0),
                "covers": bool(view.last_arrival) and _parse(when) >= _parse(view.last_arrival),
            }


def _number(value: Any) -> int:
    return value if isinstance(value, int) else 1 << 62


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _parse(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
