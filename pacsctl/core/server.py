"""`pacsctl serve` as a library: the network layer's handlers, backed by the archive.

- store: the received file goes through the archive's ingest steps (durable and indexed before
  the C-STORE is answered). Stores from concurrent associations share their fsyncs (group
  commit, pipelined: see GroupCommitter). Disk full -> 0xA700; unparsable -> 0xC000 and the bytes
  kept in quarantine; a conflicting copy (same UID, other bytes) -> quarantined, 0xB000.
- find: the index query behind `pacsctl ls` (`core.query.find_records`), identifiers decoded
  and encoded by `core.identifiers` (character sets honoured).
- locate: instance file paths under the matched patients/studies/series/instances.
- destination: C-MOVE destinations are the archive's known nodes, looked up by AE title.
- audit: every event appended to the archive's audit log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from pacsctl.config import CONFIG_NAME, load_config
from pacsctl.core.archive import AUDIT_LOG, DUPLICATE, QUARANTINED, SKIPPED, STORED, Archive, IngestBatch
from pacsctl.core.audit import AuditLog
from pacsctl.core.identifiers import build_response, parse_identifier
from pacsctl.core.query import find_records
from pacsctl.errors import StorageFullError
from pacsctl.storage import files
from pacsctl.net.balance import SharedLoad, WorkerSlot
from pacsctl.net.listener import bind_listener
from pacsctl.net.scp import RunningScp, log_failure, start_scp
from pacsctl.net.types import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    Destination,
    QueryContext,
    QueryModel,
    ScpHandlers,
    ScpOptions,
    StoreRequest,
    TlsOptions,
)

LOG = logging.getLogger(__name__)

STATUS_CONFLICT_KEPT = 0xB000  # received and kept in quarantine; the archived copy stays

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
        try:
            batch = self.archive.begin_ingest([(data, origin, staged) if staged else (data, origin)])
        except Exception as exc:
            return _failure_status(exc)
        if not batch.staged:  # skipped or quarantined by the check: nothing to commit
            return self._settle(batch, data)
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

    def close(self) -> None:
        """Nothing is left queued once every submit has returned."""

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
        if result.reason.startswith("conflict"):
            return STATUS_CONFLICT_KEPT
        return STATUS_CANNOT_UNDERSTAND
    return STATUS_CANNOT_UNDERSTAND  # skipped (e.g. a DICOMDIR sent as an instance)


class ArchiveService:
    """The `ScpHandlers` of a node serving one archive."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._lock = threading.Lock()  # the index and journal are per process, not per thread
        self.committer = GroupCommitter(archive, self._lock)
        self.audit_log = AuditLog(archive.root / AUDIT_LOG)

    def handlers(self) -> ScpHandlers:
        """The callables for `pacsctl.net.scp.start_scp`."""
        return ScpHandlers(store=self.store, find=self.find, locate=self.locate,
                           destination=self.destination, audit=self.audit_log.append)

    def close(self) -> None:
        """Finish pending writes, fold the index journal, close the audit log."""
        with self._lock:
            self.archive.close()
        self.audit_log.close()

    # -- handlers ----------------------------------------------------------------------------
    def store(self, req: StoreRequest) -> int:
        """Ingest one received instance, durable and indexed before the status is returned.

        The file the network layer streamed the data set into (preamble, File Meta built from
        the association, the data set bytes as received) already sits in the archive's tmp/:
        it is handed over as a staged file and linked into place, not written a second time."""
        data = req.path.read_bytes()
        staged = files.StagedFile(req.path, len(data), hashlib.sha256(data).hexdigest())
        origin = f"dicom://{req.assoc.calling_aet}@{req.assoc.peer_host}"
        status = self.committer.submit(data, origin, staged)
        if status == STATUS_CANNOT_UNDERSTAND:
            LOG.warning("C-STORE of %s could not be parsed; kept in quarantine",
                        req.sop_instance_uid)
        return status

    def find(self, model: QueryModel, identifier: Dataset, ctx: QueryContext
             ) -> Iterator[Dataset]:
        """C-FIND: matching index records as response identifiers."""
        query = parse_identifier(identifier)
        flt = query.filter()
        with self._lock:
            records = find_records(self.archive.index, query.level, flt)
        for record in records:
            yield build_response(record, query)

    def locate(self, model: QueryModel, identifier: Dataset, ctx: QueryContext) -> list[str]:
        """C-MOVE/C-GET: files of every instance under the matches."""
        query = parse_identifier(identifier)
        flt = query.filter()
        index = self.archive.index
        with self._lock:
            matched = find_records(index, query.level, flt)
            if query.level == "IMAGE":
                instances = matched
            elif query.level == "PATIENT":
                ids = sorted({str(r.get("PatientID", "")) for r in matched})
                instances = index.instances(patient_ids=ids) if ids else []
            elif query.level == "STUDY":
                uids = sorted({str(r["StudyInstanceUID"]) for r in matched})
                instances = index.instances(study_uids=uids) if uids else []
            else:
                series = sorted({str(r["SeriesInstanceUID"]) for r in matched})
                studies = sorted({str(r["StudyInstanceUID"]) for r in matched})
                instances = index.instances(study_uids=studies, series_uids=series) if series else []
        return [str(self.archive.path_of(r["path"])) for r in instances if r.get("path")]

    def destination(self, aet: str) -> Destination | None:
        """A known node with this AE title (config re-read, so `nodes add` applies at once)."""
        try:
            config = load_config(self.archive.root / CONFIG_NAME)
        except Exception:
            config = self.archive.config
        for node in config.nodes.values():
            if node.aet == aet:
                tls = TlsOptions(node.tls_cert, node.tls_key, node.tls_ca) if node.tls else None
                return Destination(node.host, int(node.port), tls)
        return None


@dataclass
class RunningNode:
    """A serving node: the listener and the archive service behind it."""

    scp: RunningScp
    service: ArchiveService

    @property
    def port(self) -> int:
        return self.scp.port

    def stop(self, graceful: bool = True, timeout: float | None = 60.0) -> bool:
        """Stop accepting, let in-flight associations finish (graceful), then close the
        archive. True when no association had to be aborted."""
        clean = self.scp.stop(graceful=graceful, timeout=timeout)
        self.service.close()
        return clean


def serve(archive: Archive, options: ScpOptions) -> RunningNode:
    """Start serving `archive` with `options` (its temp dir defaults to the archive's)."""
    if options.temp_dir is None:
        options.temp_dir = archive.tmp_dir
    service = ArchiveService(archive)
    scp = start_scp(service.handlers(), options)
    return RunningNode(scp, service)


def options_from_config(archive: Archive, **overrides: Any) -> ScpOptions:
    """ScpOptions from the archive config, with non-None `overrides` applied."""
    cfg = archive.config
    opts = ScpOptions(ae_title=cfg.ae_title, host=cfg.host, port=cfg.port,
                      allow=list(cfg.allow), max_associations=cfg.max_associations,
                      temp_dir=archive.tmp_dir)
    for key, value in overrides.items():
        if value is not None:
            setattr(opts, key, value)
    return opts


# -- running until told to stop ---------------------------------------------------------------

def _wait_for_signal(stop: threading.Event) -> None:
    """Block the main thread until SIGTERM or SIGINT."""

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.wait(0.5):
        pass


def _serve_in_this_process(root: Path, options: ScpOptions, sock: socket.socket | None,
                           ready: Callable[[int], None] | None, stop: threading.Event,
                           grace: float, load: WorkerSlot | None = None) -> int:
    archive = Archive.open(root)
    if options.temp_dir is None:
        options.temp_dir = archive.tmp_dir
    service = ArchiveService(archive)
    scp = start_scp(service.handlers(), options, sock=sock, load=load)
    node = RunningNode(scp, service)
    if ready is not None:
        ready(node.port)
    _wait_for_signal(stop)
    LOG.info("stopping: no new associations; waiting for %d in flight", scp.active_associations)
    node.stop(graceful=True, timeout=grace)
    return 0


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the supervising process dies (even by SIGKILL), so a
    crashed node never leaves orphans holding the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except (OSError, AttributeError):
        pass


def run_node(root: Path, options: ScpOptions, workers: int = 1,
             ready: Callable[[int], None] | None = None, grace: float = 60.0) -> int:
    """Serve the archive at `root` until SIGTERM/SIGINT, then stop accepting, let in-flight
    associations finish (up to `grace` seconds) and return 0.

    With `workers` > 1, that many processes share one listening socket, the least busy one
    accepting each connection (`net.balance`), so several associations use several cores; a
    worker that dies is replaced. `ready(port)` is called once the node accepts connections."""
    stop = threading.Event()
    if workers <= 1:
        return _serve_in_this_process(root, options, None, ready, stop, grace)
    sock = bind_listener(options.host, options.port)
    port = int(sock.getsockname()[1])
    per_worker = max(1, -(-options.max_associations // workers))
    child_options = replace(options, port=port, max_associations=per_worker)

    load = SharedLoad(workers)

    def spawn(index: int) -> int:
        pid = os.fork()
        if pid == 0:  # the worker: no threads were started before the fork
            code = 1
            try:
                _die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = _serve_in_this_process(root, replace(child_options), sock, None,
                                              threading.Event(), grace, load.slot(index))
            except BaseException as exc:
                log_failure("worker failed", exc)
            finally:
                os._exit(code)
        return pid

    children = {spawn(index): index for index in range(workers)}
    if ready is not None:
        ready(port)

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop.is_set():
        stop.wait(0.2)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done and not stop.is_set():
                LOG.error("worker %d exited (%d); starting another", pid, status)
                index = children.pop(pid)
                children[spawn(index)] = index
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    worst = 0
    for pid in children:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            continue
        worst = max(worst, os.waitstatus_to_exitcode(status) if status else 0)
    sock.close()
    return 0 if worst <= 0 else worst
