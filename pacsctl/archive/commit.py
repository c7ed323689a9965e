"""The ingest pipeline of a serving node: stores from concurrent associations share their syncs.

Each received instance goes through the archive's ingest steps (`Archive.begin_ingest`, `sync`,
`name`) and is answered only once durable and indexed. Disk full -> 0xA700; unparsable -> 0xC000
and the bytes kept in quarantine; a conflicting copy (same UID, other bytes) -> quarantined,
0xB000; a data set whose SOP Class/Instance UID is not the command's -> quarantined, 0xA900.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from pacsctl.archive.archive import DUPLICATE, QUARANTINED, SKIPPED, STORED, Archive, IngestBatch
from pacsctl.errors import StorageFullError
from pacsctl.net.scp import log_failure
from pacsctl.net.types import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    STATUS_WARNING,
    StoreOutcome,
    StoreRequest,
)
from pacsctl.storage import files

LOG = logging.getLogger(__name__)

STATUS_CONFLICT_KEPT = STATUS_WARNING  # received and kept in quarantine; the archived copy stays

_MAX_BATCH = 64


@dataclass
class _Pending:
    batch: IngestBatch
    done: bool = False
    status: int = STATUS_PROCESSING_FAILURE


class GroupCommitter:
    """Group commit, pipelined, without a commit thread (leader/follower).

    An instance needs two durability barriers: one for its data before its name is linked,
    one for its name and index line before it is acknowledged. Whoever finds no barrier
    running runs the next one for everything waiting, at either step, so one syncfs makes the
    names of one store durable and the data of the next (measured: with two associations per
    worker, a batch was one instance and every instance paid two barriers of its own). A lone
    association still pays two barriers per instance; concurrent ones share them."""

    def __init__(self, archive: Archive, lock: threading.Lock) -> None:
        self.archive = archive
        self.lock = lock  # guards the archive (index, journal) for everything in this process
        self._cond = threading.Condition()
        self._staged: list[_Pending] = []  # data written, not yet durable
        self._named: list[_Pending] = []  # linked and journaled, not yet durable
        self._syncing = False

    def submit(self, data: bytes, origin: str, staged: files.StagedFile | None = None) -> int:
        """Store one instance (optionally already staged in tmp/); returns its C-STORE status
        once durable and indexed."""
        return self._submit(data, origin, staged).status

    def _submit(
        self,
        data: bytes,
        origin: str,
        staged: files.StagedFile | None = None,
        expected: tuple[str, str] | None = None,
    ) -> StoreOutcome:
        """`submit`; with `expected` (SOP Class UID, SOP Instance UID: what the C-STORE
        command announced), a data set that says otherwise is quarantined, 0xA900."""
        try:
            batch = self.archive.begin_ingest([(data, origin, staged) if staged else (data, origin)])
        except Exception as exc:
            return StoreOutcome(_failure_status(exc))
        if not batch.staged:  # skipped or quarantined by the check: nothing to commit
            return StoreOutcome(self._settle(batch, data))
        if expected is not None:
            mismatch = _uid_mismatch(batch, expected)
            if mismatch is not None:
                return StoreOutcome(self._refuse(batch, data, mismatch), mismatch)
        return StoreOutcome(self._commit(batch))

    def _commit(self, batch: IngestBatch) -> int:
        """Make a checked batch durable and indexed, sharing barriers with concurrent ones."""
        item = _Pending(batch)
        with self._cond:
            self._staged.append(item)
        while True:
            with self._cond:
                while self._syncing and not item.done:
                    self._cond.wait()
                if item.done:
                    return item.status
                self._syncing = True
                staged, self._staged = self._staged[:_MAX_BATCH], self._staged[_MAX_BATCH:]
                named, self._named = self._named, []
            newly_named: list[_Pending] = []
            try:
                newly_named = self._round(staged, named)
            except BaseException:
                self._finish([p for p in staged + named if not p.done], STATUS_PROCESSING_FAILURE)
                raise
            finally:
                with self._cond:
                    self._named.extend(newly_named)
                    self._syncing = False
                    self._cond.notify_all()

    def store_received(self, req: StoreRequest) -> int:
        """`receive`, the status only."""
        return self.receive(req).status

    def receive(self, req: StoreRequest) -> StoreOutcome:
        """Ingest one received instance, durable and indexed before the status is returned.

        The file the network layer streamed the data set into (preamble, File Meta built from
        the association, the data set bytes as received) already sits in the archive's tmp/:
        it is handed over as a staged file and linked into place, not written a second time."""
        data = req.path.read_bytes()
        staged = None
        if req.path.parent == self.archive.tmp_dir:  # else (pynetdicom's own temp file,
            # elsewhere) the archive writes its own copy: a link cannot cross file systems
            staged = files.StagedFile(req.path, len(data), hashlib.sha256(data).hexdigest())
        origin = f"dicom://{req.assoc.calling_aet}@{req.assoc.peer_host}"
        outcome = self._submit(data, origin, staged, expected=(req.sop_class_uid, req.sop_instance_uid))
        if outcome.status == STATUS_CANNOT_UNDERSTAND:
            LOG.warning("C-STORE of %s could not be parsed; kept in quarantine", req.sop_instance_uid)
        return outcome

    def _round(self, staged: list[_Pending], named: list[_Pending]) -> list[_Pending]:
        """One barrier for both steps, then name what it made durable. Returns those named."""
        try:
            self.archive.sync(p.batch for p in staged + named)
        except Exception as exc:
            for p in staged:
                self.archive.discard(p.batch)
            self._finish(staged + named, _failure_status(exc))
            return []
        for p in named:
            self._finish([p], _status_of(p.batch.outcome()[0]))
        done_naming = []
        with self.lock:
            try:
                self.archive.index.fold_if_due()  # every journal line so far is durable now
            except Exception as exc:  # the journal keeps the records; the next fold retries
                log_failure("could not fold the index journal", exc)
            for p in staged:
                try:
                    self.archive.name(p.batch)
                except Exception as exc:
                    self._finish([p], _failure_status(exc))
                else:
                    done_naming.append(p)
        return done_naming

    def _finish(self, items: list[_Pending], status: int) -> None:
        with self._cond:
            for p in items:
                p.status, p.done = status, True

    def _refuse(self, batch: IngestBatch, data: bytes, reason: str) -> int:
        """A C-STORE whose data set is not the instance its command announced: never stored
        (it would be acknowledged and audited under one UID, filed under another), kept in
        quarantine with the reason; 0xA900 (data set does not match SOP class)."""
        self.archive.discard(batch)
        LOG.warning("refused a C-STORE with 0xA900: %s; kept in quarantine", reason)
        try:
            self.archive.quarantine(data, reason, batch.origins[0], batch.staged[0][1].sop_instance_uid)
        except Exception as exc:
            log_failure("could not quarantine a mismatched instance", exc)
            return _failure_status(exc)
        return STATUS_IDENTIFIER_MISMATCH

    def _settle(self, batch: IngestBatch, data: bytes) -> int:
        """The C-STORE status of an instance the check refused. Skipped input (not DICOM, a
        DICOMDIR) is quarantined too: received bytes are never dropped."""
        result = batch.outcome()[0]
        if result.status == SKIPPED:
            try:
                self.archive.quarantine(data, result.reason, batch.origins[0])
            except Exception as exc:
                log_failure("could not quarantine a skipped instance", exc)
        return _status_of(result)


def _uid_mismatch(batch: IngestBatch, expected: tuple[str, str]) -> str | None:
    """Why the staged instance is not the one a C-STORE command announced, or None."""
    inst = batch.staged[0][1]
    sop_class, sop_instance = expected
    wrong = []
    if inst.sop_instance_uid != sop_instance:
        wrong.append(f"SOP Instance UID {inst.sop_instance_uid} (command: {sop_instance})")
    if inst.sop_class_uid != sop_class:
        wrong.append(f"SOP Class UID {inst.sop_class_uid} (command: {sop_class})")
    return "data set does not match the C-STORE command: " + ", ".join(wrong) if wrong else None


def _failure_status(exc: BaseException) -> int:
    if isinstance(exc, StorageFullError):
        LOG.error("archive disk full: refusing an instance with 0xA700")
        return STATUS_OUT_OF_RESOURCES
    log_failure("ingest failed", exc)
    return STATUS_PROCESSING_FAILURE


def _status_of(result: Any) -> int:
    if result.status in (STORED, DUPLICATE):
        return STATUS_SUCCESS
    if result.status == QUARANTINED:
        if result.conflict:
            return STATUS_CONFLICT_KEPT
        return STATUS_CANNOT_UNDERSTAND
    return STATUS_CANNOT_UNDERSTAND  # skipped (e.g. a DICOMDIR sent as an instance)
