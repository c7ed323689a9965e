"""The archive index: which patients, studies, series and instances the archive holds.

Built on TinyDB, shaped so that it stays fast at millions of instances:

- Writers never rewrite a big file per instance. Each writing process appends one JSON line per
  instance to its own journal (`journal/<pid>-<id>.ndjson`, locked while the process lives), and
  the journals are folded into TinyDB shards in batches ("compaction").
- Shards are small TinyDB files: `patients/<hh>.json` (PatientID -> its studies),
  `studies/<hhh>.json` (study attributes, its series and counts) and one manifest per series,
  `series/hh/hh/<SeriesInstanceUID>.json` (its instances with path, size and SHA-256). A lookup by
  PatientID or StudyInstanceUID reads one shard; nothing ever loads the whole index.
- Readers see shards plus the journals not folded in yet, under a shared lock, so they always see
  every indexed instance, also from other processes writing at the same moment.
- Folding is idempotent (a record is put by its SOP Instance UID and counts are recomputed), so a
  crash mid-compaction is repaired by the next one. The index is derived from the files and can
  always be rebuilt (`pacsctl reindex`).

This module is the only user of TinyDB; its interface (`Index`) is small so it can be swapped.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage

from pacsctl.errors import IntegrityError
from pacsctl.storage import files
from pacsctl.storage.files import FILE_MODE, ensure_dir, safe_file_name

Record = dict[str, Any]


@dataclass(frozen=True)
class LevelFields:
    """Which record keys the index keeps at each level (the schema lives with the DICOM
    attributes, `dicom.attributes.INDEX_FIELDS`; the index only stores what it is told)."""

    patient: tuple[str, ...]
    study: tuple[str, ...]
    series: tuple[str, ...]
    instance: tuple[str, ...]


LOG = logging.getLogger(__name__)
JOURNAL_LIMIT = 2000  # records a writer journals before it folds them into the shards


def shard_of(key: str, digits: int = 2) -> str:
    """The shard a key belongs to: `digits` hex digits of its hash (16**digits shards)."""
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:digits]


# Study documents are the big ones (each carries its series): 4096 study shards keep a shard at
# ~5 studies per 1M instances, so a fold touching many existing studies rewrites small files.
STUDY_SHARD_DIGITS = 3


DAMAGED = "damaged"  # index/damaged/: shards a tolerant writer moved aside (kept for a look)


class IndexDamagedError(IntegrityError):
    """An index file (a shard or a series manifest) cannot be read: cut short or garbled."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"index damaged at {path}: run `pacsctl reindex`",
            hint="the files are the source of truth; reindex rebuilds the index from them",
        )
        self.path = path


class _ReadOnlyJSONStorage(Storage):
    """TinyDB storage for reading a shard; shards are written by `_Catalog.save` (group commit)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def read(self) -> dict | None:
        try:
            with open(self.path, "rb") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def write(self, data: dict) -> None:
        raise io.UnsupportedOperation("index shards are written by _Catalog.save")


_reported_damage: set[Path] = set()  # logged once per process, not once per query


class _Shard:
    """One TinyDB file holding documents keyed by one field.

    A shard that cannot be read raises IndexDamagedError; with `tolerant` (a serving node must
    go on) it is logged, read as empty, and moved aside to index/damaged/ before it is rewritten.
    """

    TABLE = "docs"

    def __init__(
        self, path: Path, key: str, tmp_dir: Path, tolerant: bool = False, quiet: bool = False
    ) -> None:
        self.path, self.key, self.tmp_dir = path, key, tmp_dir
        self.docs: dict[str, Record] = {}
        self.damaged = False
        if path.exists():
            try:
                db = TinyDB(str(path), storage=_ReadOnlyJSONStorage)
                self.docs = {doc[key]: dict(doc) for doc in db.table(self.TABLE).all()}
                db.close()
            except (
                ValueError,
                KeyError,
                TypeError,
                AttributeError,
            ):  # cut short, garbled, not TinyDB's shape
                if not tolerant:
                    raise IndexDamagedError(path) from None
                self.damaged = True
                if not quiet and path not in _reported_damage:
                    _reported_damage.add(path)
                    LOG.error("index damaged at %s: going on without it; run `pacsctl reindex`", path)
        self.dirty = False

    def move_aside(self, index_root: Path) -> None:
        """Keep a damaged shard under index/damaged/ (its relative path and the time appended)."""
        relative = self.path.relative_to(index_root)
        aside = index_root / DAMAGED / f"{relative.as_posix().replace('/', '_')}.{time.time_ns()}"
        ensure_dir(aside.parent)
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            pass
        self.damaged = False

    def payload(self) -> bytes:
        """The shard's file content, as TinyDB writes it (for a batched, group-committed save)."""
        db = TinyDB(storage=_MemoryStorage)
        db.table(self.TABLE).insert_multiple(self.docs.values())
        assert isinstance(db.storage, _MemoryStorage)
        return json.dumps(db.storage.data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _MemoryStorage(Storage):
    """TinyDB storage that keeps what TinyDB would write, for the caller to write durably."""

    def __init__(self) -> None:
        self.data: dict | None = None

    def read(self) -> dict | None:
        return self.data

    def write(self, data: dict) -> None:
        self.data = data


class _Catalog:
    """A working set of loaded shards; applies instance records the same way for reads and folds."""

    def __init__(
        self, root: Path, tmp_dir: Path, fields: LevelFields, tolerant: bool = False, quiet: bool = False
    ) -> None:
        self.root, self.tmp_dir, self.fields, self.tolerant, self.quiet = (
            root,
            tmp_dir,
            fields,
            tolerant,
            quiet,
        )
        self._patients: dict[str, _Shard] = {}
        self._studies: dict[str, _Shard] = {}
        self._manifests: dict[str, _Shard] = {}

    def patient_shard(self, patient_id: str) -> _Shard:
        return self.shard("patients", shard_of(patient_id))

    def study_shard(self, study_uid: str) -> _Shard:
        return self.shard("studies", shard_of(study_uid, STUDY_SHARD_DIGITS))

    def shard(self, kind: str, name: str) -> _Shard:
        """Shard `name` of kind "patients" or "studies", loaded once."""
        cache, key = (
            (self._patients, "PatientID") if kind == "patients" else (self._studies, "StudyInstanceUID")
        )
        if name not in cache:
            cache[name] = _Shard(
                self.root / kind / f"{name}.json", key, self.tmp_dir, self.tolerant, self.quiet
            )
        return cache[name]

    def all_shards(self, kind: str) -> list[_Shard]:
        """Every shard of a kind: those on disk and those only pending journals created."""
        loaded = self._patients if kind == "patients" else self._studies
        names = {p.stem for p in (self.root / kind).glob("*.json")} | set(loaded)
        return [self.shard(kind, name) for name in sorted(names)]

    def manifest(self, series_uid: str) -> _Shard:
        if series_uid not in self._manifests:
            # Two levels (65,536 folders): no folder passes 10,000 manifests below ~600M series.
            shard = hashlib.sha1(series_uid.encode("utf-8", "surrogatepass")).hexdigest()
            path = self.root / "series" / shard[:2] / shard[2:4] / f"{safe_file_name(series_uid)}.json"
            self._manifests[series_uid] = _Shard(
                path, "SOPInstanceUID", self.tmp_dir, self.tolerant, self.quiet
            )
        return self._manifests[series_uid]

    def apply(self, rec: Record) -> None:
        """Put one instance record into its manifest, study and patient documents.

        A record that replaced a copy filed under another series (`ReplacedSeriesInstanceUID`,
        `ReplacedStudyInstanceUID`) first takes the instance out of that series.
        """
        study_uid, series_uid = rec["StudyInstanceUID"], rec["SeriesInstanceUID"]
        old_series = rec.get("ReplacedSeriesInstanceUID")
        if old_series and old_series != series_uid:
            self.remove(rec["SOPInstanceUID"], rec.get("ReplacedStudyInstanceUID") or study_uid, old_series)
        manifest = self.manifest(series_uid)
        manifest.docs[rec["SOPInstanceUID"]] = {k: rec.get(k) for k in self.fields.instance}
        manifest.dirty = True

        studies = self.study_shard(study_uid)
        study = studies.docs.setdefault(study_uid, {"StudyInstanceUID": study_uid, "series": {}})
        _merge(study, rec, self.fields.patient + self.fields.study)
        series = study["series"].setdefault(series_uid, {"SeriesInstanceUID": series_uid})
        _merge(series, rec, self.fields.series)
        series["NumberOfSeriesRelatedInstances"] = len(manifest.docs)
        _recount(study)
        studies.dirty = True

        patients = self.patient_shard(rec.get("PatientID") or "")
        patient = patients.docs.setdefault(
            rec.get("PatientID") or "", {"PatientID": rec.get("PatientID") or "", "studies": []}
        )
        _merge(patient, rec, self.fields.patient)
        if study_uid not in patient["studies"]:
            patient["studies"].append(study_uid)
        patients.dirty = True

    def remove(self, sop_uid: str, study_uid: str, series_uid: str) -> None:
        """Take an instance out of a series; drop the series and study when they become empty."""
        manifest = self.manifest(series_uid)
        if manifest.docs.pop(sop_uid, None) is None:
            return
        manifest.dirty = True
        studies = self.study_shard(study_uid)
        study = studies.docs.get(study_uid)
        if study is None:
            return
        studies.dirty = True
        if manifest.docs:
            study["series"].setdefault(series_uid, {"SeriesInstanceUID": series_uid})[
                "NumberOfSeriesRelatedInstances"
            ] = len(manifest.docs)
        else:
            study["series"].pop(series_uid, None)
        if study["series"]:
            _recount(study)
            return
        del studies.docs[study_uid]
        patients = self.patient_shard(study.get("PatientID") or "")
        patient = patients.docs.get(study.get("PatientID") or "")
        if patient is not None and study_uid in patient["studies"]:
            patient["studies"].remove(study_uid)
            if not patient["studies"]:
                del patients.docs[patient["PatientID"]]
            patients.dirty = True

    def save(self) -> None:
        """Write every changed shard atomically, with one group commit for all of them.

        Temp files first, one barrier (syncfs, or an fsync each), then the renames, then one
        barrier for the folders. Readers never see a half-done fold (it runs under the exclusive
        lock), and a crash part-way is repaired by the next fold (the journals are deleted only
        after this returns, and folding them again is idempotent).
        """
        dirty = [
            shard
            for cache in (self._manifests, self._studies, self._patients)
            for shard in cache.values()
            if shard.dirty
        ]
        if not dirty:
            return
        staged: list[tuple[_Shard, files.StagedFile]] = []
        try:
            for shard in dirty:
                if shard.damaged:
                    shard.move_aside(self.root)
                ensure_dir(shard.path.parent)
                staged.append((shard, files.stage(self.tmp_dir, [shard.payload()], fsync=False)))
            files.barrier(self.root, files=[st.temp_path for _, st in staged])
            for shard, st in staged:
                os.replace(st.temp_path, shard.path)
                shard.dirty = False
        finally:
            for _, st in staged:
                st.temp_path.unlink(missing_ok=True)
        files.barrier(self.root, dirs={shard.path.parent for shard in dirty})


def _merge(doc: Record, rec: Record, fields: Iterable[str]) -> None:
    """Fill `doc` from `rec`: later non-empty values win, empty ones never erase."""
    for field in fields:
        value = rec.get(field)
        if value not in (None, ""):
            doc[field] = value
        else:
            doc.setdefault(field, "")


def _recount(study: Record) -> None:
    series = study["series"].values()
    study["NumberOfStudyRelatedSeries"] = len(study["series"])
    study["NumberOfStudyRelatedInstances"] = sum(s["NumberOfSeriesRelatedInstances"] for s in series)
    study["ModalitiesInStudy"] = sorted({s["Modality"] for s in series if s.get("Modality")})


class Index:
    """The archive's index. Safe to use from several processes at once.

    Write with `add()` (journaled at once) and `flush()` (fold into shards); read with
    `patients()`, `studies()`, `series()`, `instances()` and `iter_instances()`.
    """

    def __init__(
        self, root: Path, tmp_dir: Path, fields: LevelFields, files_root: Path | None = None
    ) -> None:
        self.root = ensure_dir(root)
        self.tmp_dir = tmp_dir
        self.fields = fields
        # Record paths are relative to `files_root`. Given it, a record another process journaled
        # counts only once its file exists: a writer appends a batch's lines before the one sync
        # that makes them and the files' names durable, so after a power cut a line can outlive
        # its file's name (never acknowledged: the sender sends it again).
        self.files_root = files_root
        # A serving node goes on without a damaged shard (logged, moved aside when rewritten);
        # commands raise IndexDamagedError (`tolerate_damage`).
        self.tolerant = False
        self._journal_dir = ensure_dir(root / "journal")
        self._lock_path = root / "lock"
        self._journal_fd: int | None = None
        self._journal_path: Path | None = None
        self._journaled = 0

    def tolerate_damage(self) -> None:
        """Read a damaged shard as empty (logged once) instead of raising: for `serve`."""
        self.tolerant = True

    def damaged_files(self) -> list[Path]:
        """Every index file that cannot be read, and those a tolerant writer moved aside
        (`verify` reports them; `reindex` rebuilds the index without them)."""
        out = []
        for kind, key in (
            ("patients", "PatientID"),
            ("studies", "StudyInstanceUID"),
            ("series", "SOPInstanceUID"),
        ):
            pattern = "*/*/*.json" if kind == "series" else "*.json"
            for path in sorted((self.root / kind).glob(pattern)):
                if _Shard(path, key, self.tmp_dir, tolerant=True, quiet=True).damaged:
                    out.append(path)
        return out + sorted(p for p in (self.root / DAMAGED).glob("*") if p.is_file())

    # -- writing -----------------------------------------------------------------------------

    @property
    def journal_path(self) -> Path | None:
        """This process's journal file, once it has journaled something."""
        return self._journal_path

    def add(self, records: Iterable[Record], durable: bool = True) -> None:
        """Journal instance records. With `durable`, they survive a power cut once this returns
        (and the journal is folded when it is long). Else the caller makes `journal_path`
        durable, then calls `fold_if_due`."""
        lines = b"".join(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n" for r in records
        )
        if not lines:
            return
        fd = self._journal()
        start = os.lseek(fd, 0, os.SEEK_END)  # only this process appends to its journal
        try:
            view = memoryview(lines)
            while view:  # a short write (disk full) must not silently drop the rest
                view = view[os.write(fd, view) :]
            if durable:
                os.fdatasync(fd)
        except BaseException:
            # Cut a half-written batch off, else the next append is glued onto its torn line.
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
        self._journaled += lines.count(b"\n")
        if durable:
            self.fold_if_due()

    def fold_if_due(self) -> None:
        """Fold once this process has journaled JOURNAL_LIMIT records (all durable by now)."""
        if self._journaled >= JOURNAL_LIMIT:
            self.flush()

    def flush(self) -> int:
        """Fold this process's journal and any sealed or orphaned ones into the shards.

        Returns the number of records folded. Safe to call at any time from any process.
        """
        own = self._journal_path
        if own is None and not files.writable(self.root):
            return 0  # a reader of a read-only archive: nothing of ours; others' journals wait for a writer
        self._seal_journal()
        with self._locked(fcntl.LOCK_EX):
            claimed = self._claim_journals()
            catalog = _Catalog(self.root, self.tmp_dir, self.fields, self.tolerant)
            count = 0
            for path, fd in claimed:
                for rec in _read_journal(fd):
                    if path == own or self._stored(rec, folding=True):
                        catalog.apply(rec)
                        count += 1
            catalog.save()
            for path, fd in claimed:
                path.unlink(missing_ok=True)
                os.close(fd)
        return count

    def close(self) -> None:
        """Fold what this process journaled; the index is complete on disk afterwards."""
        self.flush()

    def clear(self) -> None:
        """Drop the whole index (for `reindex`); journals of live writers are kept."""
        self._seal_journal()
        with self._locked(fcntl.LOCK_EX):
            for kind in ("patients", "studies", "series", DAMAGED):
                shutil.rmtree(self.root / kind, ignore_errors=True)
            for path, fd in self._claim_journals():
                path.unlink(missing_ok=True)
                os.close(fd)

    def _journal(self) -> int:
        if self._journal_fd is None:
            name = f"{os.getpid()}-{uuid.uuid4().hex}"
            # Created and locked under a name folds ignore, then renamed: a folding process must
            # never claim (and delete) a fresh journal in the instant before its writer locks it.
            fresh = self._journal_dir / f"{name}.new"
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, FILE_MODE)
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while we live: tells a live journal from an orphan
            path = self._journal_dir / f"{name}.ndjson"
            os.rename(fresh, path)
            self._journal_fd, self._journal_path = fd, path
        return self._journal_fd

    def _seal_journal(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)  # releases the lock: the journal is now sealed
            self._journal_fd = self._journal_path = None
            self._journaled = 0

    def _claim_journals(self) -> list[tuple[Path, int]]:
        """Lock every journal no live writer holds (sealed, or left by a killed process)."""
        claimed = []
        for path in sorted(self._journal_dir.glob("*.ndjson")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            claimed.append((path, fd))
        return claimed

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            # Reading an archive on read-only media (a backup disk, a snapshot): a shared lock
            # works on a read-only descriptor, and without a lock file nobody ever wrote here.
            if mode != fcntl.LOCK_SH or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            try:
                fd = os.open(self._lock_path, os.O_RDONLY)
            except FileNotFoundError:
                yield
                return
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    # -- reading -----------------------------------------------------------------------------

    @contextmanager
    def _view(
        self,
        patient_ids: list[str] | None = None,
        study_uids: list[str] | None = None,
        tolerant: bool | None = None,
    ) -> Iterator[_Catalog]:
        """A catalog with the pending journals applied, consistent under the shared lock.

        With `patient_ids` or `study_uids`, only the pending records that can change those
        patients and studies are applied (a live writer keeps up to JOURNAL_LIMIT records
        unfolded; applying all of them would load hundreds of shards for a one-patient lookup).
        """
        quiet = tolerant is not None  # the caller reports damage itself
        tolerant = self.tolerant if tolerant is None else tolerant
        with self._locked(fcntl.LOCK_SH):
            catalog = _Catalog(self.root, self.tmp_dir, self.fields, tolerant, quiet)
            pending: list[Record] = []
            others: set[int] = set()  # ids of the records other processes journaled
            for path in sorted(self._journal_dir.glob("*.ndjson")):
                try:
                    with open(path, "rb") as fh:
                        records = list(_parse_lines(fh.read()))
                except FileNotFoundError:
                    continue
                if path != self._journal_path:
                    others.update(map(id, records))
                pending.extend(records)
            if pending and (patient_ids is not None or study_uids is not None):
                patients = set(patient_ids or ())
                studies = set(study_uids or ())
                for pid in patients:  # the studies these patients hold on disk or gain now
                    doc = catalog.patient_shard(pid).docs.get(pid)
                    studies.update(doc["studies"] if doc else ())
                studies.update(
                    str(rec.get("StudyInstanceUID"))
                    for rec in pending
                    if rec.get("PatientID", "") in patients
                )
                pending = [
                    rec
                    for rec in pending
                    if rec.get("PatientID", "") in patients
                    or rec.get("StudyInstanceUID") in studies
                    or rec.get("ReplacedStudyInstanceUID") in studies
                ]
            for rec in pending:
                if id(rec) not in others or self._stored(rec):
                    catalog.apply(rec)
            yield catalog

    def _stored(self, rec: Record, folding: bool = False) -> bool:
        """Whether a journaled record's file exists (always true without `files_root`)."""
        if self.files_root is None or not rec.get("path"):
            return True
        if os.path.exists(self.files_root / rec["path"]):
            return True
        if folding:  # said once, when the line is dropped for good
            LOG.warning(
                "index: dropped the journal record of %s: its file is missing (a writer "
                "stopped before its batch was durable; it was never acknowledged)",
                rec.get("SOPInstanceUID", "?"),
            )
        return False

    def patients(self, patient_ids: list[str] | None = None) -> list[Record]:
        """Patient records (with study/series/instance counts), all or those with these IDs."""
        with self._view(patient_ids) as cat:
            docs = self._patient_docs(cat, patient_ids)
            out = []
            for patient in docs:
                studies = [s for s in (self._study(cat, uid) for uid in patient["studies"]) if s]
                rec = {k: patient.get(k, "") for k in self.fields.patient}
                rec["NumberOfPatientRelatedStudies"] = len(studies)
                rec["NumberOfPatientRelatedSeries"] = sum(s["NumberOfStudyRelatedSeries"] for s in studies)
                rec["NumberOfPatientRelatedInstances"] = sum(
                    s["NumberOfStudyRelatedInstances"] for s in studies
                )
                out.append(rec)
            return out

    def studies(
        self, patient_ids: list[str] | None = None, study_uids: list[str] | None = None
    ) -> list[Record]:
        """Study records (patient fields, counts, ModalitiesInStudy), narrowed by exact keys."""
        with self._view(patient_ids, study_uids) as cat:
            return [_public(s) for s in self._study_docs(cat, patient_ids, study_uids)]

    def series(
        self,
        patient_ids: list[str] | None = None,
        study_uids: list[str] | None = None,
        series_uids: list[str] | None = None,
    ) -> list[Record]:
        """Series records, each with its StudyInstanceUID and the patient fields."""
        with self._view(patient_ids, study_uids) as cat:
            return list(self._series_records(cat, patient_ids, study_uids, series_uids))

    def instances(
        self,
        patient_ids: list[str] | None = None,
        study_uids: list[str] | None = None,
        series_uids: list[str] | None = None,
    ) -> list[Record]:
        """Instance records (path, size, sha256...) with their series, study and patient keys."""
        with self._view(patient_ids, study_uids) as cat:
            return [
                {**series, **inst}
                for series in self._series_records(cat, patient_ids, study_uids, series_uids)
                for inst in cat.manifest(series["SeriesInstanceUID"]).docs.values()
            ]

    def _series_records(
        self,
        cat: _Catalog,
        patient_ids: list[str] | None,
        study_uids: list[str] | None,
        series_uids: list[str] | None,
    ) -> Iterator[Record]:
        """Series records with their study and patient keys, narrowed by exact keys."""
        for study in self._study_docs(cat, patient_ids, study_uids):
            for uid, series in study["series"].items():
                if series_uids is None or uid in series_uids:
                    yield {**_context(study), **series}

    def iter_instances(self, skip_damaged: bool | None = None) -> Iterator[Record]:
        """Every instance record (SOP UIDs, path, size, sha256), one series manifest at a time.

        `skip_damaged` (default: `tolerate_damage`) reads past damaged manifests without raising."""
        tolerant = self.tolerant if skip_damaged is None else skip_damaged
        with self._view(tolerant=tolerant) as cat:
            seen: set[str] = set()
            for uid, shard in list(cat._manifests.items()):  # pending ones first
                seen.add(shard.path.name)
                yield from (dict(d, SeriesInstanceUID=uid) for d in shard.docs.values())
            for path in sorted((self.root / "series").glob("*/*/*.json")):
                if path.name in seen:
                    continue
                shard = _Shard(path, "SOPInstanceUID", self.tmp_dir, tolerant, quiet=skip_damaged is not None)
                yield from shard.docs.values()

    def _patient_docs(self, cat: _Catalog, patient_ids: list[str] | None) -> list[Record]:
        if patient_ids is not None:
            return [d for pid in patient_ids if (d := cat.patient_shard(pid).docs.get(pid))]
        return [d for shard in cat.all_shards("patients") for d in shard.docs.values()]

    def _study_docs(
        self, cat: _Catalog, patient_ids: list[str] | None, study_uids: list[str] | None
    ) -> list[Record]:
        if study_uids is None and patient_ids is not None:
            study_uids = [uid for p in self._patient_docs(cat, patient_ids) for uid in p["studies"]]
        if study_uids is not None:
            docs = [d for uid in dict.fromkeys(study_uids) if (d := self._study(cat, uid))]
        else:
            docs = [d for shard in cat.all_shards("studies") for d in shard.docs.values()]
        if patient_ids is not None:
            docs = [d for d in docs if d.get("PatientID", "") in patient_ids]
        return docs

    @staticmethod
    def _study(cat: _Catalog, uid: str) -> Record | None:
        return cat.study_shard(uid).docs.get(uid)


def _public(study: Record) -> Record:
    return {k: v for k, v in study.items() if k != "series"}


def _context(study: Record) -> Record:
    return {k: study.get(k, "") for k in ("PatientID", "PatientName", "StudyInstanceUID", "StudyDate")}


def _parse_lines(data: bytes) -> Iterator[Record]:
    """Records of a journal; a torn last line (writer killed mid-append) is ignored."""
    for line in data.splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def _read_journal(fd: int) -> Iterator[Record]:
    with os.fdopen(os.dup(fd), "rb") as fh:
        yield from _parse_lines(fh.read())
