"""The local archive: one folder that every pacsctl command shares.

Layout (everything private to the owner, 0700/0600)::

    ARCHIVE/
      pacsctl.toml             settings and known nodes
      objects/hh/hh/UID.dcm    the DICOM files, as received (source of truth)
      index/                   the catalog (rebuildable from objects/ with `pacsctl reindex`)
      quarantine/DATE/H.dcm    input that could not be stored (named by its hash), H.json: why
      tmp/                     temp files of writes in progress (same file system)
      audit.log                who sent, asked for and took what (NDJSON)

Objects are spread over 65,536 folders by a hash of their SOP Instance UID, so no folder grows
past a few thousand entries even at a hundred million instances, and a duplicate is found by
name alone, across processes, without asking the index.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pacsctl.archive.outbox import OutboxWriter
from pacsctl.config import (
    CONFIG_NAME,
    ON_CONFLICT_POLICIES,
    Config,
    OnConflict,
    dump_config,
    load_config,
    resolve_archive_dir,
)
from pacsctl.dicom.attributes import INDEX_FIELDS, index_record
from pacsctl.errors import InvalidDicomError, PacsctlError, StorageFullError, UsageError
from pacsctl.storage import files
from pacsctl.storage.index import Index

if TYPE_CHECKING:
    from pacsctl.dicom.instance import DataSetIdentity, Instance

# pydicom (and numpy with it) is imported where instances are read (`dicom.instance`, inside the
# functions below), not with the facade: `ls`, `quarantine`, `nodes`, `config` and `audit` open
# an archive and read no instance, and its import was most of their start-up.

OBJECTS, INDEX, QUARANTINE, TMP, AUDIT_LOG = "objects", "index", "quarantine", "tmp", "audit.log"


class IngestStatus(StrEnum):
    """What became of one input (the `status` of import's JSON records)."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # the same data set was archived already: nothing written
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"  # not DICOM (or a DICOMDIR): nothing to store


STORED, DUPLICATE, QUARANTINED, SKIPPED = (
    IngestStatus.STORED,
    IngestStatus.DUPLICATE,
    IngestStatus.QUARANTINED,
    IngestStatus.SKIPPED,
)

CONFLICT_KEPT_REASON = (
    "conflict: same SOP Instance UID, different bytes in the data set; kept the archived copy"
)
SAME_DATA_SET_REASON = "same data set as the archived copy (only the File Meta header differs)"


class Match(Enum):
    """How an incoming copy compares with the archived one of the same SOP Instance UID."""

    ABSENT = "absent"  # nothing archived under that UID
    IDENTICAL = "identical"  # the same bytes
    SAME_DATA_SET = "same_data_set"  # the same data set and transfer syntax; File Meta differs
    DIFFERENT = "different"  # a conflict


@dataclass(frozen=True)
class _Archived:
    """Size and SHA-256 of the archived file (what its index record says)."""

    size: int
    sha256: str


def _compare_with_archived(
    target: str, incoming: Callable[[], DataSetIdentity | None], sha256: str
) -> tuple[Match, _Archived]:
    """Compare an incoming Part-10 instance (its SHA-256, and its data set identity, computed
    only when needed) with the archived file at `target`.

    Duplicates are decided by the data set (PS3.10: the File Meta group describes the file,
    not the instance): the whole file's hash first, which settles nearly every case in one
    read of the archived file, and only when that differs the data sets' hashes."""
    try:
        size, existing_sha = files.sha256_file(target)
    except FileNotFoundError:
        return Match.ABSENT, _Archived(0, "")
    archived = _Archived(size, existing_sha)
    if existing_sha == sha256:
        return Match.IDENTICAL, archived
    from pacsctl.dicom.instance import data_set_identity_of_file

    try:
        theirs = incoming()
        same = theirs is not None and theirs == data_set_identity_of_file(target)
    except OSError:  # replaced or removed meanwhile: not provably the same
        same = False
    return (Match.SAME_DATA_SET if same else Match.DIFFERENT), archived


@dataclass
class IngestResult:
    """What happened to one input. `reason` says why for quarantined and skipped input."""

    status: IngestStatus
    origin: str
    sop_instance_uid: str = ""
    path: str = ""
    reason: str = ""
    size: int = 0
    conflict: bool = False  # same SOP Instance UID as an archived copy, different data set
    unreadable: bool = False  # skipped because the input could not be read (a partial failure)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class IngestBatch:
    """Inputs on their way into the archive (`Archive.begin_ingest`, then `sync`, `name`,
    `sync`): one result per input once named; the staged temp files; what naming touched."""

    policy: OnConflict
    origins: list[str]
    results: list[IngestResult | None]
    staged: list[tuple[int, Instance, files.StagedFile]] = field(default_factory=list)
    named: bool = False
    records: list[dict] = field(default_factory=list)
    dirs: set[str] = field(default_factory=set)
    # outbox intents per position in `staged`: (route, intent id); None until queued
    queued: dict[int, list[tuple[str, str]]] | None = None
    outbox: set[Path] = field(default_factory=set)  # outbox journals this batch wrote to

    def outcome(self) -> list[IngestResult]:
        """The results, in input order."""
        return [r for r in self.results if r is not None]


class Archive:
    """An open archive. Use as a context manager, or call `close()` to fold the index."""

    def __init__(self, root: Path, config: Config) -> None:
        self.root = root
        self.config = config
        self.tmp_dir = root / TMP
        self._index: Index | None = None
        self.route = True  # queue what is stored for the routes (`import --no-route`: False)
        self._outbox: OutboxWriter | None = None
        # dry runs: SOP Instance UID -> (SHA-256, data set identity) of what would be archived
        self._planned: dict[str, tuple[str, DataSetIdentity | None]] = {}

    @property
    def index(self) -> Index:
        """The archive's index (opened, and its folders made, on first use: `open` does)."""
        if self._index is None:
            self._index = Index(self.root / INDEX, self.tmp_dir, INDEX_FIELDS, files_root=self.root)
        return self._index

    @classmethod
    def open(cls, root: str | os.PathLike | None = None, create: bool = True) -> Archive:
        """Open the archive at `root` (else `PACSCTL_ARCHIVE`, else the default).

        Only what stores may `create` it: anything else opening a folder that holds no archive
        (a typo in the path, a disk that is not mounted) fails, rather than checking or listing
        a new empty archive and calling it good."""
        path = resolve_archive_dir(root).absolute()
        if not (path / CONFIG_NAME).exists():
            if not create:
                raise missing_archive_error(path)
            _check_creatable(path)
        for sub in (OBJECTS, INDEX, QUARANTINE, TMP):
            files.ensure_dir(path / sub)
        config = load_config(path / CONFIG_NAME)
        archive = cls(path, config)
        archive.index  # noqa: B018 - open the index now, in one thread, before anyone shares it
        if not (path / CONFIG_NAME).exists():
            archive.save_config()
        return archive

    @classmethod
    def for_dry_run(cls, root: str | os.PathLike | None = None) -> Archive:
        """The archive at `root` to plan an ingest against (`ingest(..., dry_run=True)`), without
        creating anything: a folder that holds no archive yet plans as an empty one."""
        path = resolve_archive_dir(root).absolute()
        if (path / CONFIG_NAME).exists():
            return cls.open(path, create=False)
        _check_creatable(path)
        return cls(path, Config())

    def exists(self) -> bool:
        """Whether the archive is on disk (False only for a `for_dry_run` of a new one)."""
        return (self.root / CONFIG_NAME).exists()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Fold this process's journal into the index (also done by the next writer if we die)
        and seal its outbox journals."""
        if self._outbox is not None:
            self._outbox.close()
        if self._index is not None:
            self._index.close()

    def save_config(self) -> None:
        """Write `pacsctl.toml` atomically."""
        files.write_atomic(self.tmp_dir, self.root / CONFIG_NAME, dump_config(self.config).encode())

    # -- paths -------------------------------------------------------------------------------

    @staticmethod
    def object_relpath(sop_instance_uid: str) -> str:
        """Where an instance lives, relative to the archive root."""
        digest = hashlib.sha1(sop_instance_uid.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{OBJECTS}/{digest[:2]}/{digest[2:4]}/{files.safe_file_name(sop_instance_uid)}.dcm"

    def path_of(self, relpath: str) -> Path:
        """Absolute path of an archive-relative path from the index."""
        return self.root / relpath

    def instance_record(self, sop_instance_uid: str) -> dict | None:
        """The index record of an archived instance (None: not held). An instance UID names no
        index shard, so it is found through its file (named by the UID, `object_relpath`) and
        the study that file names: one file and one study shard, not a walk over every record."""
        from pacsctl.dicom.rawheader import study_uid_of_file

        study_uid = study_uid_of_file(self.path_of(self.object_relpath(sop_instance_uid)))
        if not study_uid:
            return None
        records = self.index.instances(study_uids=[study_uid])
        return next((r for r in records if r.get("SOPInstanceUID") == sop_instance_uid), None)

    # -- writing -----------------------------------------------------------------------------

    def ingest(
        self,
        items: Sequence[tuple[bytes, str] | tuple[bytes, str, files.StagedFile]],
        on_conflict: str | None = None,
        dry_run: bool = False,
    ) -> list[IngestResult]:
        """Store a batch of inputs `(bytes, origin)`; durable and indexed when this returns.

        One round of fsyncs covers the whole batch (group commit). Non-DICOM input is skipped,
        unreadable DICOM is quarantined with its reason; a DICOMDIR is skipped here (media are
        followed by the importer). Raises StorageFullError when the disk is full; nothing of the
        batch is then acknowledged, and no temp file is left behind. With `dry_run`, the results
        say what would happen and nothing is written.

        The steps, which a caller committing several batches at once may run itself (serve
        does): `begin_ingest`, `sync` (the data), `name`, `sync` (the names and index lines).
        """
        if dry_run:
            policy = self._policy(on_conflict)
            results, checked = self._check(items, dry_run=True)
            for i, inst in checked:
                results[i] = self._plan(inst, items[i][1], policy, _prestaged(items[i], inst))
            return IngestBatch(policy, [], results).outcome()
        batch = self.begin_ingest(items, on_conflict)
        if not batch.staged:
            return batch.outcome()
        try:
            self.sync([batch])
        except Exception:
            self.discard(batch)
            raise
        self.name(batch)
        self.sync([batch])  # the files are stored if this fails; a re-run journals them again
        self.index.fold_if_due()
        return batch.outcome()

    def begin_ingest(
        self,
        items: Sequence[tuple[bytes, str] | tuple[bytes, str, files.StagedFile]],
        on_conflict: str | None = None,
    ) -> IngestBatch:
        """Check the inputs and write each instance to a temp file in tmp/, not yet durable.

        Input that cannot be stored gets its result here (skipped, or quarantined: durable).
        A third item element, a StagedFile already holding exactly these bytes in tmp/ (serve:
        the file the network layer streamed into), is taken as is. Thread-safe."""
        batch = IngestBatch(self._policy(on_conflict), [item[1] for item in items], [])
        batch.results, checked = self._check(items, dry_run=False)
        try:
            for i, inst in checked:
                pre = _prestaged(items[i], inst)
                batch.staged.append((i, inst, pre or files.stage(self.tmp_dir, [inst.data], fsync=False)))
        except OSError as exc:
            self.discard(batch)
            raise _storage_error(exc) from None
        return batch

    def sync(self, batches: Iterable[IngestBatch]) -> None:
        """One durability barrier for batches at either step: the data of those not yet named,
        the names and index journal lines of those named. Raises StorageFullError, OSError."""
        paths: list[Path] = []
        dirs: set[str] = set()
        for batch in batches:
            if batch.named:
                dirs |= batch.dirs
                if batch.records and self.index.journal_path:
                    paths.append(self.index.journal_path)
            else:
                paths.extend(stage.temp_path for _, _, stage in batch.staged)
                if batch.queued is None:
                    self._queue_intents(batch)  # durable with the data: before any name exists
            paths.extend(batch.outbox)
        try:
            files.barrier(self.root, files=paths, dirs=dirs)
        except OSError as exc:
            raise _storage_error(exc) from None

    def name(self, batch: IngestBatch) -> None:
        """Give a batch's instances their names and journal their index records. Their data
        must be durable (`sync`) first: a name must never point at bytes a crash could lose.
        The names and lines become durable at the next `sync`; a line that outlives its file's
        name in a power cut is dropped when read (Index.files_root). Not thread-safe: one
        thread of a process at a time (the index journal)."""
        for i, inst, stage in batch.staged:
            result, record = self._publish(inst, stage, batch.origins[i], batch.policy)
            batch.results[i] = result
            if record is not None:
                batch.records.append(record)
            if result.status == STORED:
                batch.dirs.add(os.path.dirname(os.path.join(self.root, result.path)))
        batch.named = True
        try:
            self._queue_outcomes(batch)
            self.index.add(batch.records, durable=False)
        except OSError as exc:
            raise _storage_error(exc) from None

    # -- the routes' outboxes (`archive.outbox`) --------------------------------------------

    @property
    def outbox(self) -> OutboxWriter:
        """This process's outbox journals."""
        if self._outbox is None:
            self._outbox = OutboxWriter(self.root)
        return self._outbox

    def _queue_intents(self, batch: IngestBatch) -> None:
        batch.queued = {}
        if not (self.route and self.config.routes and batch.staged):
            return
        records = [
            {
                **inst.fields(),
                "path": self.object_relpath(inst.sop_instance_uid),
                "size": stage.size,
                "sha256": stage.sha256,
            }
            for _, inst, stage in batch.staged
        ]
        try:
            batch.queued, written = self.outbox.intents(self.config.routes, records)
        except OSError as exc:
            raise _storage_error(exc) from None
        batch.outbox |= written

    def _queue_outcomes(self, batch: IngestBatch, failed: bool = False) -> None:
        """Say of each queued intent whether its instance was stored (it goes) or not."""
        if not batch.queued:
            return
        settled: list[tuple[str, str, bool]] = []
        for pos, pairs in batch.queued.items():
            result = None if failed else batch.results[batch.staged[pos][0]]
            stored = result is not None and result.status == STORED
            settled.extend((route, entry_id, stored) for route, entry_id in pairs)
        batch.queued = {}
        batch.outbox |= self.outbox.outcomes(settled)

    def discard(self, batch: IngestBatch) -> None:
        """Remove the temp files of a batch that will not be named (its ingest failed)."""
        if not batch.named:
            for _, _, stage in batch.staged:
                stage.temp_path.unlink(missing_ok=True)
            try:  # best effort: an intent left open is dropped once its file proves absent
                self._queue_outcomes(batch, failed=True)
            except OSError:
                pass

    def _policy(self, on_conflict: str | None) -> OnConflict:
        policy = on_conflict or self.config.on_conflict
        if policy not in ON_CONFLICT_POLICIES:
            raise UsageError(f"invalid on-conflict policy {policy!r}", hint="keep or replace")
        return OnConflict(policy)

    def _check(
        self, items: Sequence[tuple], dry_run: bool
    ) -> tuple[list[IngestResult | None], list[tuple[int, Instance]]]:
        """Parse each input: results for those that cannot be stored, the instances of the rest."""
        from pacsctl.dicom.instance import DicomdirError, NotDicomError, read_instance

        results: list[IngestResult | None] = [None] * len(items)
        checked: list[tuple[int, Instance]] = []
        for i, (data, origin, *_rest) in enumerate(items):
            try:
                checked.append((i, read_instance(data)))
            except NotDicomError as exc:
                results[i] = IngestResult(SKIPPED, origin, reason=str(exc))
            except DicomdirError:
                results[i] = IngestResult(SKIPPED, origin, reason="DICOMDIR (media index, not an instance)")
            except InvalidDicomError as exc:
                if dry_run:
                    results[i] = IngestResult(QUARANTINED, origin, reason=str(exc))
                elif _prestaged(items[i]) is not None:  # already in tmp/: moved, not written again
                    results[i] = self._quarantine_file(items[i][2].temp_path, str(exc), origin, "")
                else:
                    results[i] = self.quarantine(data, str(exc), origin)
        return results, checked

    def _publish(self, inst: Instance, stage: files.StagedFile, origin: str, policy: str):
        """Give a staged instance its name, applying the duplicate policy. Returns (result, record)."""
        relpath = self.object_relpath(inst.sop_instance_uid)
        target = os.path.join(self.root, relpath)  # a str, not a Path: this runs for every instance
        uid = inst.sop_instance_uid
        if files.publish(stage, target, replace=False):
            return IngestResult(STORED, origin, uid, relpath, size=stage.size), self._record(
                inst, relpath, stage
            )
        from pacsctl.dicom.instance import data_set_identity_of_file

        # the staged file, not inst.data: a large input's data is a memory map of it
        match, archived = _compare_with_archived(
            target, lambda: data_set_identity_of_file(stage.temp_path), stage.sha256
        )
        if match is Match.ABSENT:  # removed since: take its place
            files.publish(stage, target, replace=True)
            return IngestResult(STORED, origin, uid, relpath, size=stage.size), self._record(
                inst, relpath, stage
            )
        if match in (Match.IDENTICAL, Match.SAME_DATA_SET):
            stage.temp_path.unlink(missing_ok=True)
            # Journal it again (folding is idempotent): a writer killed between publishing a
            # file and journaling it left the file unindexed, and only this re-run can tell.
            # The record describes the archived file, which stays as it is.
            reason = "" if match is Match.IDENTICAL else SAME_DATA_SET_REASON
            return (
                IngestResult(DUPLICATE, origin, uid, relpath, reason, size=stage.size),
                self._record(inst, relpath, archived),
            )
        if policy == "keep":
            return self._quarantine_file(
                stage.temp_path, CONFLICT_KEPT_REASON, origin, uid, conflict=True
            ), None
        # replace: the archived copy goes to quarantine first (a hard link), so a name always exists
        previous = _filed_under(target)
        self._quarantine_file(
            target,
            "conflict: replaced by a newer copy with different bytes in the data set",
            relpath,
            uid,
            keep_source=True,
        )
        files.publish(stage, target, replace=True)
        record = self._record(inst, relpath, stage)
        if previous != (record["StudyInstanceUID"], record["SeriesInstanceUID"]) and all(previous):
            # the new copy is filed under another study/series: the index moves it from the old one
            record["ReplacedStudyInstanceUID"], record["ReplacedSeriesInstanceUID"] = previous
        return IngestResult(
            STORED, origin, uid, relpath, size=stage.size, reason="replaced a different copy", conflict=True
        ), record

    def _plan(
        self, inst: Instance, origin: str, policy: str, staged: files.StagedFile | None = None
    ) -> IngestResult:
        """What `_publish` would do with an instance, without writing anything. Instances planned
        earlier in this dry run count as archived (`_planned`), so a dry run finds duplicates
        and conflicts inside one batch and across batches, as the real run would."""
        from pacsctl.dicom.instance import data_set_identity, data_set_identity_of_file

        uid = inst.sop_instance_uid
        relpath = self.object_relpath(uid)
        result = IngestResult(STORED, origin, uid, relpath, size=len(inst.data))
        # A large input was streamed to a temp file (hashed on the way): read it from there,
        # never through its memory map (that would bring all of it into memory).
        sha256 = staged.sha256 if staged else hashlib.sha256(inst.data).hexdigest()

        def identity() -> DataSetIdentity | None:
            return data_set_identity_of_file(staged.temp_path) if staged else data_set_identity(inst.data)

        planned = self._planned.get(uid)
        if planned is not None:
            if planned[0] == sha256:
                match = Match.IDENTICAL
            else:
                match = (
                    Match.SAME_DATA_SET
                    if planned[1] is not None and planned[1] == identity()
                    else Match.DIFFERENT
                )
        else:
            match, _ = _compare_with_archived(str(self.path_of(relpath)), identity, sha256)
        if match is Match.ABSENT:
            self._planned[uid] = (sha256, identity())
        elif match is Match.IDENTICAL:
            result.status = DUPLICATE
        elif match is Match.SAME_DATA_SET:
            result.status, result.reason = DUPLICATE, SAME_DATA_SET_REASON
        elif policy == "keep":
            result.status, result.reason, result.conflict = QUARANTINED, CONFLICT_KEPT_REASON, True
        else:
            result.reason, result.conflict = "would replace a different copy", True
            self._planned[uid] = (sha256, identity())
        return result

    @staticmethod
    def _record(inst: Instance, relpath: str, stored: files.StagedFile | _Archived) -> dict:
        return index_record(
            inst.fields(),
            transfer_syntax_uid=inst.transfer_syntax_uid,
            path=relpath,
            size=stored.size,
            sha256=stored.sha256,
        )

    # -- quarantine --------------------------------------------------------------------------

    def quarantine(self, data: bytes, reason: str, origin: str, sop_instance_uid: str = "") -> IngestResult:
        """Keep bytes that could not be stored, with the reason beside them; durable."""
        try:
            staged = files.stage(self.tmp_dir, [data], fsync=True)
        except OSError as exc:
            raise _storage_error(exc) from None
        return self._quarantine_file(staged.temp_path, reason, origin, sop_instance_uid)

    def _quarantine_file(
        self,
        source: str | Path,
        reason: str,
        origin: str,
        sop_instance_uid: str,
        keep_source: bool = False,
        conflict: bool = False,
    ) -> IngestResult:
        """Move (or with `keep_source` hard-link) a file into quarantine with its reason record.
        `conflict`: the file lost to the archived copy of its SOP Instance UID (recorded, so that
        a `move` counting arrivals from the archive can tell a conflict from a duplicate)."""
        now = dt.datetime.now(dt.UTC)
        folder = files.ensure_dir(self.root / QUARANTINE / now.strftime("%Y-%m-%d"))
        # Named by content, so quarantining the same bytes again (a re-run import) adds nothing.
        name = files.sha256_file(source)[1][:40]
        target = folder / f"{name}.dcm"
        if keep_source:
            if not target.exists():
                os.link(source, target)
        else:
            os.replace(source, target)
        info: dict[str, object] = {
            "time": now.isoformat(timespec="seconds"),
            "reason": reason,
            "origin": origin,
            "SOPInstanceUID": sop_instance_uid,
        }
        if conflict:
            info["conflict"] = True
        files.write_atomic(self.tmp_dir, folder / f"{name}.json", json.dumps(info).encode())
        relpath = str(target.relative_to(self.root))
        return IngestResult(
            QUARANTINED,
            origin,
            sop_instance_uid,
            relpath,
            reason,
            size=target.stat().st_size,
            conflict=conflict,
        )

    def conflicts_since(self, since: dt.datetime, sop_instance_uids: Iterable[str]) -> set[str]:
        """Of `sop_instance_uids`, those a copy was quarantined for as a conflict at or after
        `since` (a timezone-aware time), by any process writing to this archive."""
        wanted = set(sop_instance_uids)
        floor = since.astimezone(dt.UTC).replace(microsecond=0).isoformat()
        return {
            r["SOPInstanceUID"]
            for r in self.quarantined(since)
            if r.get("conflict") and r.get("SOPInstanceUID") in wanted and r.get("time", "") >= floor
        }

    def quarantined(self, since: dt.datetime | None = None) -> list[dict]:
        """Every quarantined item's reason record, with its `path`, oldest first (with `since`,
        only the date folders from that day on are read)."""
        records = []
        first_day = since.astimezone(dt.UTC).strftime("%Y-%m-%d") if since else ""
        for info in (self.root / QUARANTINE).glob("*/*.json"):
            if info.parent.name < first_day:
                continue
            try:
                record = json.loads(info.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            record["path"] = str(info.with_suffix(".dcm").relative_to(self.root))
            records.append(record)
        return sorted(records, key=lambda r: (r.get("time", ""), r["path"]))


def _prestaged(item: tuple, inst: Instance | None = None) -> files.StagedFile | None:
    """The temp file an ingest item brings (serve's received file, import's streamed input)
    holding exactly the item's bytes; None when there is none, or when the check rewrote the
    bytes (a File Meta header added) so that the file no longer holds them."""
    if len(item) < 3 or item[2] is None or (inst is not None and inst.data is not item[0]):
        return None
    return item[2]


def missing_archive_error(path: Path) -> UsageError:
    """`error: no archive at PATH`, for commands that only read an archive."""
    return UsageError(
        f"no archive at {path}",
        hint="check --archive / PACSCTL_ARCHIVE; `pacsctl import` or `pacsctl serve` creates an archive",
    )


def _check_creatable(path: Path) -> None:
    """An archive may be created in a new or empty folder only (or in a half-made archive)."""
    if path.exists() and any(path.iterdir()) and not (path / OBJECTS).exists():
        raise UsageError(
            f"{path} is not empty and not a pacsctl archive", hint="choose an empty or new folder"
        )


def _filed_under(path: str | Path) -> tuple[str, str]:
    """(StudyInstanceUID, SeriesInstanceUID) of an archived file, empty strings if unreadable."""
    import pydicom

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SeriesInstanceUID"]
        )
        return str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - a damaged old copy must not block its replacement
        return "", ""


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            "the archive's disk is full", hint="free space or move the archive; nothing was half-written"
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return PacsctlError(
            f"cannot write to the archive: {exc.strerror}",
            hint="a read-only or foreign archive can be listed, not written",
        )
    return exc
