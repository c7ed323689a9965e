"""Receiving retrieved instances into the archive: C-GET sub-operations and C-MOVEs to us.

Every instance goes through the serving node's group commit (durable and indexed before it is
answered, conflicts and garbage quarantined) and is counted: received, new, already there,
refused.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from pacsctl.archive.archive import AUDIT_LOG, CONFLICT_KEPT_REASON, Archive
from pacsctl.archive.audit import AuditEvent, AuditLog, AuditQuery, select_records
from pacsctl.archive.commit import STATUS_CONFLICT_KEPT, GroupCommitter
from pacsctl.errors import NetworkError
from pacsctl.net.cancel import Cancellation
from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import STATUS_SUCCESS, AssocInfo, NodeLike, ScpHandlers, ScpOptions, StoreRequest

LOG = logging.getLogger(__name__)


class ArchiveReceiver:
    """Stores instances handed over by a C-GET or an incoming C-STORE into the archive and
    counts them: received, new, already there, refused. Thread-safe (SCP threads call it).
    The records of what it was handed (`note_audit`) go to the archive's audit log, as
    `serve` writes them."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._lock = threading.Lock()
        self.received: set[str] = set()
        self.stored = 0
        self.duplicates = 0
        self.conflicts = 0
        self.store_failed = 0
        self._archive_lock = threading.Lock()  # the index and journal are per process
        self._committer = GroupCommitter(archive, self._archive_lock)
        # C-GET: the net layer describes the association from the acceptor's side, which is
        # the peer; the archive must record the peer as the sender, not us.
        self.source: AssocInfo | None = None
        self.rejects: list[dict[str, Any]] = []  # audit records of associations we rejected
        self.audit_log = AuditLog(archive.root / AUDIT_LOG)

    def note_audit(self, record: dict[str, Any]) -> None:
        """Audit callable of a temporary listener or a C-GET: appends the record to the
        archive's audit log (for a C-GET naming the peer as the sender, as for the store
        itself) and keeps the associations the listener rejected."""
        if self.source is not None and "calling_aet" in record:
            src = self.source
            record = {
                **record,
                "calling_aet": src.calling_aet,
                "called_aet": src.called_aet,
                "peer": f"{src.peer_host}:{src.peer_port}",
            }
        try:
            self.audit_log.append(record)
        except OSError as exc:  # the audit trail must not fail a transfer (serve's rule too)
            LOG.warning("cannot write the audit log: %s", exc.strerror or exc)
        if record.get("event") == AuditEvent.REJECT:
            with self._lock:
                self.rejects.append(record)

    def has(self, sop_instance_uid: str) -> bool:
        """True when the archive holds this instance (files are the source of truth)."""
        return self.archive.path_of(Archive.object_relpath(sop_instance_uid)).is_file()

    def __call__(self, req: StoreRequest) -> int:
        uid = req.sop_instance_uid
        if self.source is not None:
            req = dataclasses.replace(req, assoc=self.source)
        existed = self.has(uid)
        status = self._committer.store_received(req)
        with self._lock:
            self.received.add(uid)
            if status == STATUS_CONFLICT_KEPT:
                self.conflicts += 1
                LOG.warning("quarantined: %s: %s", uid, CONFLICT_KEPT_REASON)  # import's wording
            elif status != STATUS_SUCCESS:
                self.store_failed += 1
                LOG.warning("instance %s not stored (status 0x%04X)", uid, status)
            elif existed:
                self.duplicates += 1
            else:
                self.stored += 1
        return status

    def close(self) -> None:
        """Fold the index journal, close the archive and the audit log; safe to call twice."""
        with self._archive_lock:
            self.archive.close()
        try:
            self.audit_log.close()
        except OSError as exc:
            LOG.warning("cannot sync the audit log: %s", exc.strerror or exc)


@contextmanager
def receiving(
    archive: Archive, ae_title: str, source_aet: str, cancel: Cancellation | None = None
) -> Iterator[tuple[ArchiveReceiver, bool]]:
    """A temporary storage listener on the archive's configured host and port, as `ae_title`,
    storing into `archive` (for C-MOVEs to our own AE title). Yields (receiver, listening);
    when the port is taken, presumably by a running `pacsctl serve` on this archive, nothing
    listens here and arrivals are counted from the archive afterwards.

    Only `source_aet` (the node moving to us) and the archive's allow-list may store: the
    listener is open on the configured host while the move runs, and nobody else should be
    able to slip instances into the archive through it. The associations it rejects are kept
    in `receiver.rejects`. After a stop request (`cancel`) what is still arriving gets the
    grace period, not a minute."""
    receiver = ArchiveReceiver(archive)
    cfg = archive.config
    allow = list(dict.fromkeys([source_aet, *cfg.allow]))
    options = ScpOptions(
        ae_title=ae_title,
        host=cfg.host,
        port=cfg.port,
        allow=allow,
        max_associations=cfg.max_associations,
        temp_dir=archive.tmp_dir,
    )
    try:
        listener: RunningScp | None = start_scp(
            ScpHandlers(store=receiver, audit=receiver.note_audit), options
        )
    except NetworkError as exc:
        LOG.info("not listening on port %s (%s): counting arrivals from the archive", cfg.port, exc)
        listener = None
    try:
        yield receiver, listener is not None
    finally:
        if listener is not None:
            stopping = cancel is not None and cancel.requested
            listener.stop(graceful=True, timeout=cancel.grace if stopping and cancel else 60.0)
        receiver.close()


def rejects_in_audit_log(archive: Archive, since: datetime, source: NodeLike) -> list[dict[str, Any]]:
    """Associations our running node rejected since `since` that came from `source`: read
    from the archive's audit log, which `pacsctl serve` writes."""
    query = AuditQuery(since=since, event=AuditEvent.REJECT)
    return rejects_of(select_records(archive.root / AUDIT_LOG, query), source)


def rejects_of(records: Iterable[dict[str, Any]], source: NodeLike) -> list[dict[str, Any]]:
    """The reject records that name `source`, by its AE title or its host."""
    found = []
    for record in records:
        host = str(record.get("peer", "")).rsplit(":", 1)[0]
        if record.get("calling_aet") == source.aet or host == source.host:
            found.append(record)
    return found
