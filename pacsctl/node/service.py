"""`pacsctl serve` as a library: the network layer's handlers, backed by the archive.

- store: the received file goes through the group commit (`archive.commit.GroupCommitter`).
- find: the index query behind `pacsctl ls` (`archive.search.find_records`), identifiers decoded
  and encoded by `dicom.identifiers` (character sets honoured).
- locate: instance file paths under the matched patients/studies/series/instances.
- destination: C-MOVE destinations are the archive's known nodes, looked up by AE title.
- audit: every event appended to the archive's audit log.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pacsctl.archive.archive import AUDIT_LOG, OBJECTS, Archive
from pacsctl.archive.audit import AuditLog
from pacsctl.archive.commit import GroupCommitter
from pacsctl.archive.search import candidate_records, instances_under, record_matcher
from pacsctl.config import CONFIG_NAME, load_config
from pacsctl.dicom.identifiers import Query, build_response, parse_identifier
from pacsctl.dicom.matching import QueryValueTooComplexError, RecordFilter
from pacsctl.errors import UsageError
from pacsctl.net.balance import WorkerSlot
from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import (
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    Destination,
    QueryContext,
    QueryModel,
    QueryRefusedError,
    ScpHandlers,
    ScpOptions,
    StoreOutcome,
    StoreRequest,
    TlsOptions,
)
from pacsctl.storage import files

LOG = logging.getLogger(__name__)


def require_servable(archive: Archive) -> None:
    """Raise ReadOnlyError when the archive cannot take what a node receives (before serving)."""
    files.require_writable(
        archive.root, (archive.tmp_dir, archive.index.root, archive.root / OBJECTS), "serve stores into it"
    )


class ArchiveService:
    """The `ScpHandlers` of a node serving one archive."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        require_servable(archive)
        archive.index.tolerate_damage()  # a damaged shard must not take the node down (logged)
        self._lock = threading.Lock()  # the index and journal are per process, not per thread
        self.committer = GroupCommitter(archive, self._lock)
        self.audit_log = AuditLog(archive.root / AUDIT_LOG)

    def handlers(self) -> ScpHandlers:
        """The callables for `pacsctl.net.scp.start_scp`."""
        return ScpHandlers(
            store=self.store,
            find=self.find,
            locate=self.locate,
            destination=self.destination,
            audit=self.audit_log.append,
        )

    def close(self) -> None:
        """Finish pending writes, fold the index journal, close the audit log."""
        with self._lock:
            self.archive.close()
        self.audit_log.close()

    # -- handlers ----------------------------------------------------------------------------
    def store(self, req: StoreRequest) -> StoreOutcome:
        """Ingest one received instance (`GroupCommitter.receive`)."""
        return self.committer.receive(req)

    def find(self, model: QueryModel, identifier: Dataset, ctx: QueryContext) -> Iterator[Dataset]:
        """C-FIND: matching index records as response identifiers. The lock is held only to
        read the candidate records: matching them (the query's cost) runs beside the stores."""
        query, flt = _compiled(identifier)
        with self._lock:
            records = candidate_records(self.archive.index, query.level, flt)
        for record in _matching(records, query.level, flt, ctx):
            yield build_response(record, query)

    def locate(self, model: QueryModel, identifier: Dataset, ctx: QueryContext) -> list[str]:
        """C-MOVE/C-GET: files of every instance under the matches."""
        query, flt = _compiled(identifier)
        index = self.archive.index
        with self._lock:
            candidates = candidate_records(index, query.level, flt)
        matched = list(_matching(candidates, query.level, flt, ctx))
        with self._lock:
            instances = instances_under(index, query.level, matched)
        return [str(self.archive.path_of(r["path"])) for r in instances if r.get("path")]

    def destination(self, aet: str) -> Destination | None:
        """A known node with this AE title (config re-read, so `nodes add` applies at once)."""
        try:
            config = load_config(self.archive.root / CONFIG_NAME)
        except Exception:
            config = self.archive.config
        for node in config.nodes.values():
            if node.aet == aet:
                tls = (
                    TlsOptions(
                        node.tls_cert,
                        node.tls_key,
                        node.tls_ca,
                        check_hostname=not node.tls_no_hostname_check,
                    )
                    if node.tls
                    else None
                )
                return Destination(node.host, int(node.port), tls)
        return None


# How many records are matched between two looks at the request's deadline.
_DEADLINE_CHECK_EVERY = 256


def _compiled(identifier: Dataset) -> tuple[Query, RecordFilter]:
    """The request's query and filter; a request that cannot be matched is refused with 0xA900
    and a reason that names attributes, never values."""
    try:
        query = parse_identifier(identifier)
        return query, query.filter()
    except QueryValueTooComplexError as exc:
        raise QueryRefusedError(
            STATUS_IDENTIFIER_MISMATCH, f"{exc.keyword}: query value too long or with too many wildcards"
        ) from None
    except UsageError as exc:  # its message may quote a value (a birth date): not logged
        raise QueryRefusedError(
            STATUS_IDENTIFIER_MISMATCH, f"identifier cannot be matched ({type(exc).__name__})"
        ) from None


def _matching(
    records: list[dict[str, Any]], level: str, flt: RecordFilter, ctx: QueryContext
) -> Iterator[dict[str, Any]]:
    """The records `flt` matches (as `ls` matches them), until the request's time budget is
    spent (then refused)."""
    matches = record_matcher(level, flt)
    for i, record in enumerate(records):
        if i % _DEADLINE_CHECK_EVERY == 0 and ctx.expired():
            raise QueryRefusedError(STATUS_OUT_OF_RESOURCES, "time budget spent while matching")
        if matches(record):
            yield record


@dataclass
class RunningNode:
    """A serving node: the listener and the archive service behind it."""

    scp: RunningScp
    service: ArchiveService

    @property
    def port(self) -> int:
        return self.scp.port

    def stop(
        self, graceful: bool = True, timeout: float | None = 60.0, abort: Callable[[], bool] | None = None
    ) -> bool:
        """Stop accepting, let in-flight associations finish (graceful; until `abort()` says
        otherwise), then close the archive. True when no association had to be aborted."""
        clean = self.scp.stop(graceful=graceful, timeout=timeout, abort=abort)
        self.service.close()
        return clean


def serve(
    archive: Archive,
    options: ScpOptions,
    sock: socket.socket | None = None,
    load: WorkerSlot | None = None,
    accept_in_caller: bool = False,
) -> RunningNode:
    """Start serving `archive` with `options` (its temp dir defaults to the archive's); `sock`,
    `load` and `accept_in_caller` as for `net.scp.start_scp` (a worker of several sharing a port)."""
    if options.temp_dir is None:
        options.temp_dir = archive.tmp_dir
    service = ArchiveService(archive)
    scp = start_scp(service.handlers(), options, sock=sock, load=load, accept_in_caller=accept_in_caller)
    return RunningNode(scp, service)


def options_from_config(archive: Archive, **overrides: Any) -> ScpOptions:
    """ScpOptions from the archive config, with non-None `overrides` applied."""
    cfg = archive.config
    opts = ScpOptions(
        ae_title=cfg.ae_title,
        host=cfg.host,
        port=cfg.port,
        allow=list(cfg.allow),
        max_associations=cfg.max_associations,
        acse_timeout=cfg.acse_timeout,
        dimse_timeout=cfg.dimse_timeout,
        network_timeout=cfg.network_timeout,
        temp_dir=archive.tmp_dir,
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(opts, key, value)
    return opts
