"""A non-blocking DICOM listener (Verification, Storage, Query/Retrieve FIND/MOVE/GET).

`start_scp(handlers, options)` returns a `RunningScp`; everything archive-specific happens in
the `ScpHandlers` callables, and the socket side (accepting, TLS, worker balance) lives in
`net.listener`. Sub-operations of MOVE/GET, counting and Pending responses are
pynetdicom's (its final response is only sent after the last sub-operation was answered).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # names made at import time
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

import pacsctl.net.setup  # noqa: F401  (pynetdicom settings)
from pacsctl.errors import InvalidQueryError, NetworkError
from pacsctl.net import fastpath, sending, tls
from pacsctl.net.balance import WorkerSlot
from pacsctl.net.fastpath import encoding, faststore, receive
from pacsctl.net.listener import AcceptorAE, ConnectionHandler, Server
from pacsctl.net.types import (
    STATUS_CANCEL,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_MOVE_DESTINATION_UNKNOWN,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PENDING,
    STATUS_PROCESSING_FAILURE,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    STATUS_SUB_OPERATIONS_FAILED,
    STATUS_SUCCESS,
    STATUS_UNABLE_TO_PROCESS,
    STATUS_WARNING,
    AssocInfo,
    QueryContext,
    QueryModel,
    QueryRefusedError,
    ScpHandlers,
    ScpOptions,
    StatusCategory,
    StoreOutcome,
    StoreRequest,
    status_category,
)

LOG = logging.getLogger(__name__)
_POLL = 0.2  # seconds between the accept loop's looks at a stop request

_MODELS: dict[str, tuple[QueryModel, str]] = {
    PatientRootQueryRetrieveInformationModelFind: ("P", "find"),
    StudyRootQueryRetrieveInformationModelFind: ("S", "find"),
    PatientRootQueryRetrieveInformationModelMove: ("P", "move"),
    StudyRootQueryRetrieveInformationModelMove: ("S", "move"),
    PatientRootQueryRetrieveInformationModelGet: ("P", "get"),
    StudyRootQueryRetrieveInformationModelGet: ("S", "get"),
}

# A SOP class UID no association ever negotiates: yielding a data set of this class makes
# pynetdicom count a failed sub-operation without sending anything.
_NO_CONTEXT_SOP_CLASS = "1.2.826.0.1.3680043.10.1524.0.0"

# A-ASSOCIATE-RJ (result source, diagnostic) -> the reason the audit log records (PS3.8 9.3.4).
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not allowed",
    (1, 7): "called AE title mismatch",
    (2, 1): "no reason given (ACSE)",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "too many associations",
}

# Identifier keys safe to audit (UIDs and levels; never names or IDs).
_AUDIT_KEYS = ("QueryRetrieveLevel", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

# Received data sets stream into a file in a directory of our choosing (net.fastpath.receive),
# unless PACSCTL_FAST_PATH=0 or this pynetdicom lacks what it patches.
fastpath.install(fastpath.enabled_by_default(), serving=False)


def log_failure(what: str, exc: BaseException) -> None:
    """Log a failed handler by exception type only: messages and tracebacks can quote data set
    values (patient names), which must never reach the log. The traceback goes to DEBUG."""
    LOG.error("%s: %s", what, type(exc).__name__)
    LOG.debug("%s", what, exc_info=exc)


def _write_failure_status(exc: OSError, sop_instance: str) -> int:
    """The status of a C-STORE whose data set could not be written to the archive's tmp/."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        LOG.error("archive disk full: refusing %s with 0xA700", sop_instance)
        return STATUS_OUT_OF_RESOURCES
    log_failure(f"could not write the received data set of {sop_instance}", exc)
    return STATUS_PROCESSING_FAILURE


def assoc_info(assoc: Association) -> AssocInfo:
    """Who is calling whom, from an acceptor association (kept on it once established)."""
    info = getattr(assoc, "_pacsctl_info", None)
    if info is None:
        info = AssocInfo(
            calling_aet=str(assoc.requestor.ae_title).strip(),
            called_aet=str(assoc.acceptor.ae_title).strip(),
            peer_host=str(assoc.requestor.address),
            peer_port=int(assoc.requestor.port or 0),
        )
        if assoc.is_established:
            assoc._pacsctl_info = info  # type: ignore[attr-defined]
    return info


class RunningScp:
    """A listener running in background threads (its accept loop too, unless `accept_here`)."""

    def __init__(self, ae: AE, server: Server, options: ScpOptions) -> None:
        self.ae = ae
        self.server = server
        self.options = options
        self.port: int = int(server.server_address[1])
        self.host: str = str(server.server_address[0])
        self._stopped = False
        self._stop_lock = threading.Lock()

    def accept_here(self) -> None:
        """Run the accept loop in the calling thread until `stop_accepting` (from another
        thread), for a listener started with `accept_in_caller`."""
        self.server.serve_forever(poll_interval=_POLL)

    def stop_accepting(self) -> None:
        """Stop the accept loop, close the listening socket, drop connections that have not
        associated (nothing to finish). Idempotent."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self.server.shutdown()  # stops the accept loop and closes the listening socket
            self.server.connections.drop_unassociated()

    @property
    def active_associations(self) -> int:
        """Associations currently open on this listener."""
        return len(self.server.active_associations)

    def stop(
        self, graceful: bool = True, timeout: float | None = None, abort: Callable[[], bool] | None = None
    ) -> bool:
        """Stop accepting connections; when `graceful`, wait (up to `timeout` s, or until
        `abort()` is true) for in-flight associations to finish, then abort whatever is left.
        True if none had to be aborted."""
        self.stop_accepting()
        deadline = None if timeout is None else time.monotonic() + timeout
        busy = self.server.connections.in_flight()  # idle associations need no waiting for
        while graceful and busy:
            if deadline is not None and time.monotonic() > deadline:
                break
            if abort is not None and abort():
                break
            time.sleep(0.05)
            busy = self.server.connections.in_flight()
        for assoc in self.server.active_associations:
            assoc.abort()
        self.server.connections.close()
        return not busy

    def __enter__(self) -> RunningScp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(graceful=False)


class _Dispatcher:
    """Turns pynetdicom events into calls of the `ScpHandlers` and audit records."""

    def __init__(self, handlers: ScpHandlers, options: ScpOptions) -> None:
        self.h = handlers
        self.options = options

    # -- audit -------------------------------------------------------------------------------
    def audit(self, event: str, info: AssocInfo | None, **fields: Any) -> None:
        """Hand one audit record to the audit callable; never lets it break the service."""
        if self.h.audit is None:
            return
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
        }
        if info is not None:
            record.update(
                calling_aet=info.calling_aet,
                called_aet=info.called_aet,
                peer=f"{info.peer_host}:{info.peer_port}",
            )
        record.update({k: v for k, v in fields.items() if v is not None})
        try:
            self.h.audit(record)
        except Exception as exc:  # an audit failure must not drop an association
            log_failure(f"audit handler failed for {event}", exc)

    def on_refused(self, address: Any, reason: str) -> None:
        self.audit("refuse", None, peer=f"{address[0]}:{address[1]}", reason=reason)

    def on_established(self, event: evt.Event) -> None:
        if event.assoc.is_acceptor:
            self.audit("associate", assoc_info(event.assoc))

    def on_rejected(self, event: evt.Event) -> None:
        # The reason is the one the A-ASSOCIATE-RJ we sent carries (its source and diagnostic
        # codes), and the called AE title the one the peer asked for (the acceptor's is ours).
        info = assoc_info(event.assoc)
        sent = event.assoc.acceptor.primitive
        code = (int(getattr(sent, "result_source", 0) or 0), int(getattr(sent, "diagnostic", 0) or 0))
        called = getattr(event.assoc.requestor.primitive, "called_ae_title", None)
        if called is not None:
            info = replace(info, called_aet=str(called).strip())
        self.audit("reject", info, reason=_REJECT_REASONS.get(code, "rejected"))

    def on_released(self, event: evt.Event) -> None:
        if event.assoc.is_acceptor:
            self.audit("release", assoc_info(event.assoc))

    def on_aborted(self, event: evt.Event) -> None:
        faststore.abandon(event.assoc.dul)  # a data set cut off mid-way: its temp file goes
        if event.assoc.is_acceptor:
            self.audit("abort", assoc_info(event.assoc))

    # -- services ----------------------------------------------------------------------------
    def on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def on_store(self, event: evt.Event) -> int:
        req = cast(C_STORE, event.request)
        path, offset = req._dataset_path, None
        if isinstance(path, tuple):  # pynetdicom's (path, offset) form on the send side
            path, offset = path
        originator = req.MoveOriginatorApplicationEntityTitle
        sop_class, sop_instance = req.AffectedSOPClassUID, req.AffectedSOPInstanceUID
        return self.store_received(
            event.assoc,
            str(sop_class) if sop_class else None,
            str(sop_instance) if sop_instance else None,
            str(event.context.transfer_syntax),
            getattr(req, "_dataset_file", None),
            path,
            str(originator).strip() if originator else None,
            offset,
        )

    def store_received(
        self,
        assoc: Association,
        sop_class: str | None,
        sop_instance: str | None,
        ts: str,
        stream: Any,
        path: Any,
        move_originator: str | None,
        offset: int | None = None,
    ) -> int:
        """Hand a received data set (in `stream`, a receive._StreamFile, at `path`) to the
        store handler; audit it; return the C-STORE status. pynetdicom's C-STORE event and the
        DUL-thread path (faststore) both end here. A command without a valid Affected SOP
        Class/Instance UID is refused here (its file, if any, is removed by the caller)."""
        info = assoc_info(assoc)
        reason = None
        if not (encoding.is_uid(sop_class) and encoding.is_uid(sop_instance)):
            if stream is not None:
                stream.close()
            reason = _bad_command_uids(sop_class, sop_instance)
            LOG.warning(
                "refused a C-STORE from %s with 0x%04X: %s",
                info.calling_aet,
                STATUS_CANNOT_UNDERSTAND,
                reason,
            )
            status = STATUS_CANNOT_UNDERSTAND
            sop_class = sop_class if encoding.is_uid(sop_class) else None
            sop_instance = sop_instance if encoding.is_uid(sop_instance) else None
        elif self.h.store is None:
            status = STATUS_SOP_CLASS_NOT_SUPPORTED
        else:
            # All fragments are written and flushed. Close it now (pynetdicom would after the
            # handler) so the receiver may take the file over: link or rename it into place.
            if stream is not None:
                stream.close()
            failed = receive.stream_error(stream)
            if failed is not None:
                status = _write_failure_status(failed, sop_instance)
            else:
                if offset is None:
                    offset = getattr(stream, "data_offset", None) or _data_offset(Path(path))
                outcome = self._store(
                    StoreRequest(
                        sop_class_uid=sop_class,
                        sop_instance_uid=sop_instance,
                        transfer_syntax_uid=ts,
                        assoc=info,
                        path=Path(path),
                        data_offset=offset,
                        move_originator_aet=move_originator,
                    )
                )
                status, reason = outcome.status, outcome.reason
        self.audit(
            "store",
            info,
            SOPClassUID=sop_class,
            SOPInstanceUID=sop_instance,
            TransferSyntaxUID=ts,
            status=status,
            reason=reason,
        )
        return status

    def _store(self, store_req: StoreRequest) -> StoreOutcome:
        assert self.h.store is not None  # the storage service is only offered with a handler
        try:
            outcome = self.h.store(store_req)
        except Exception as exc:
            log_failure(f"store handler failed for {store_req.sop_instance_uid}", exc)
            return StoreOutcome(STATUS_PROCESSING_FAILURE)
        return outcome if isinstance(outcome, StoreOutcome) else StoreOutcome(int(outcome))

    def _query(
        self, event: evt.Event, budget: float | None = None
    ) -> tuple[QueryModel, str, Dataset, QueryContext]:
        model, service = _MODELS[str(event.request.AffectedSOPClassUID)]
        ctx = QueryContext(
            assoc_info(event.assoc),
            is_cancelled=lambda: event.is_cancelled,
            deadline=None if budget is None else time.monotonic() + budget,
        )
        return model, service, event.identifier, ctx

    def on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        model, _, identifier, ctx = self._query(event, self.options.find_time_budget)
        keys = _audit_keys(identifier)
        matches, status, reason = 0, STATUS_SUCCESS, None
        try:
            if self.h.find is None:
                status = STATUS_UNABLE_TO_PROCESS
                yield status, None
                return
            for ds in self.h.find(model, identifier, ctx):
                if event.is_cancelled:
                    status = STATUS_CANCEL
                    yield status, None
                    return
                if ctx.expired():  # the handler may not look: the next match is not sent
                    raise QueryRefusedError(STATUS_OUT_OF_RESOURCES, _budget_spent(self.options))
                matches += 1
                yield STATUS_PENDING, ds
        except QueryRefusedError as exc:
            LOG.warning("C-FIND refused with 0x%04X after %d matches: %s", exc.status, matches, exc.detail)
            status, reason = exc.status, exc.detail
            yield status, None
        except Exception as exc:
            log_failure("find handler failed", exc)
            status = (
                STATUS_IDENTIFIER_MISMATCH if isinstance(exc, InvalidQueryError) else STATUS_UNABLE_TO_PROCESS
            )
            yield status, None
        finally:
            self.audit("find", ctx.assoc, model=model, matches=matches, status=status, reason=reason, **keys)

    def on_move(self, event: evt.Event) -> Iterator[Any]:
        model, _, identifier, ctx = self._query(event)
        dest_aet = str(event.move_destination).strip()
        keys = _audit_keys(identifier)
        dest = self.h.destination(dest_aet) if self.h.destination else None
        if dest is None:
            self.audit(
                "move",
                ctx.assoc,
                destination=dest_aet,
                status=STATUS_MOVE_DESTINATION_UNKNOWN,
                reason="unknown destination",
                **keys,
            )
            yield None, None  # pynetdicom answers 0xA801
            return
        try:
            paths = self.h.locate(model, identifier, ctx) if self.h.locate else []
        except Exception as exc:  # pynetdicom turns the exception into a failure response
            log_failure("locate handler failed", exc)
            self.audit("move", ctx.assoc, destination=dest_aet, status="failed", **keys)
            raise
        tally = _SubopTally()
        store_assoc: dict[str, Association] = {}

        def _established(ev: evt.Event) -> None:
            store_assoc["assoc"] = ev.assoc

        infos = _infos(paths)
        kwargs: dict[str, Any] = {
            "contexts": sending.contexts_for(
                (i.sop_class_uid, i.transfer_syntax_uid) for i in infos if i is not None
            )
            or [build_context(Verification)],
            "evt_handlers": [
                sending.NODELAY_HANDLER,
                (evt.EVT_ESTABLISHED, _established),
                (evt.EVT_DIMSE_RECV, tally.on_dimse_recv),
            ],
        }
        if dest.tls is not None:
            kwargs["tls_args"] = (tls.client_context(dest.tls), dest.host)  # the name to check
        yield dest.host, dest.port, kwargs
        yield len(infos)
        status = None
        try:
            status = yield from _suboperations(event, infos, tally, lambda: store_assoc.get("assoc"))
        finally:
            self.audit(
                "move",
                ctx.assoc,
                destination=dest_aet,
                status=status,
                matches=len(infos),
                **tally.as_fields(),
                **keys,
            )

    def on_get(self, event: evt.Event) -> Iterator[Any]:
        model, _, identifier, ctx = self._query(event)
        keys = _audit_keys(identifier)
        try:
            paths = self.h.locate(model, identifier, ctx) if self.h.locate else []
        except Exception as exc:  # pynetdicom turns the exception into a failure response
            log_failure("locate handler failed", exc)
            self.audit("get", ctx.assoc, status="failed", **keys)
            raise
        infos = _infos(paths)
        tally = _SubopTally()
        event.assoc.bind(evt.EVT_DIMSE_RECV, tally.on_dimse_recv)
        yield len(infos)
        status = None
        try:
            status = yield from _suboperations(event, infos, tally, lambda: event.assoc)
        finally:
            event.assoc.unbind(evt.EVT_DIMSE_RECV, tally.on_dimse_recv)
            self.audit("get", ctx.assoc, status=status, matches=len(infos), **tally.as_fields(), **keys)


class _SubopTally:
    """Counts C-STORE responses seen on the sub-operation association (for the audit)."""

    def __init__(self) -> None:
        self.completed = self.failed = self.warning = 0

    def on_dimse_recv(self, event: evt.Event) -> None:
        msg = event.message
        if type(msg).__name__ != "C_STORE_RSP":
            return
        status = int(getattr(msg.command_set, "Status", STATUS_CANNOT_UNDERSTAND))
        if status == STATUS_SUCCESS:
            self.completed += 1
        elif status_category(status) is StatusCategory.WARNING:
            self.warning += 1
        else:
            self.failed += 1

    def settle(self, total: int) -> None:
        """Sub-operations that got no Success/Warning response failed (sent or not)."""
        self.failed = max(0, total - self.completed - self.warning)

    def final_status(self, total: int) -> int:
        # Same rule pynetdicom applies to the final response (PS3.4 C.4.2.1.5).
        if self.failed == 0 and self.warning == 0:
            return STATUS_SUCCESS
        if self.failed == total:
            return STATUS_SUB_OPERATIONS_FAILED
        return STATUS_WARNING

    def as_fields(self) -> dict[str, int]:
        done = self.completed + self.failed + self.warning
        return {"completed": self.completed, "failed": self.failed, "warning": self.warning, "sent": done}


def _bad_command_uids(sop_class: str | None, sop_instance: str | None) -> str:
    """Why a C-STORE command's UIDs were refused (the values are not quoted: not UIDs)."""
    bad = [
        name for name, uid in (("Class", sop_class), ("Instance", sop_instance)) if not encoding.is_uid(uid)
    ]
    return " and ".join(f"Affected SOP {name} UID" for name in bad) + " missing or not a UID"


def _budget_spent(options: ScpOptions) -> str:
    return f"time budget of {options.find_time_budget:g} s spent"


def _audit_keys(identifier: Dataset | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if identifier is None:
        return out
    for key in _AUDIT_KEYS:
        value = identifier.get(key)
        if value not in (None, ""):
            out[key] = str(value) if not isinstance(value, list) else [str(v) for v in value]
    return out


def _suboperations(
    event: evt.Event, infos: list[Any], tally: _SubopTally, store_assoc: Callable[[], Association | None]
) -> Generator[Any, None, int]:
    """The C-MOVE/C-GET sub-operations: one Pending per instance, honouring C-CANCEL; returns
    the final status, decided only once every sub-operation has been answered."""
    for info in infos:
        if event.is_cancelled:
            yield STATUS_CANCEL, None
            return STATUS_CANCEL
        yield STATUS_PENDING, _dataset_for(store_assoc(), info, tally)
    tally.settle(len(infos))
    return tally.final_status(len(infos))


def _infos(paths: list[str]) -> list[sending.FileInfo | None]:
    out: list[sending.FileInfo | None] = []
    for p in paths:
        try:
            out.append(sending.file_info(p))
        except Exception as exc:  # counted as a failed sub-operation when its turn comes
            LOG.warning("cannot read %s for retrieve: %s", p, type(exc).__name__)
            out.append(None)
    return out


def _dataset_for(assoc: Association | None, info: sending.FileInfo | None, tally: _SubopTally) -> Dataset:
    """The data set to yield for one sub-operation. When the file cannot be sent (unreadable,
    nothing acceptable negotiated, codec failure) a stub whose SOP class has no context is
    yielded instead: pynetdicom then counts a failed sub-operation with exact remaining counts
    (a non-Dataset yield would leave its remaining count off by one)."""
    if info is not None and assoc is not None:
        try:
            # The retrieving peer asked for the instance; decompressed if that is all it takes.
            accepted = sending.accepted_syntaxes(assoc, info.sop_class_uid)
            payload, _ = sending.load_for_peer(info, accepted, sending.Decompress.LOSSY)
            if not isinstance(payload, Dataset):
                payload = pydicom.dcmread(payload)
            return payload
        except Exception as exc:
            LOG.warning("cannot send %s: %s", info.sop_instance_uid, type(exc).__name__)
    stub = Dataset()
    stub.SOPClassUID = _NO_CONTEXT_SOP_CLASS
    stub.SOPInstanceUID = info.sop_instance_uid if info is not None else "0.0"
    return stub


def _data_offset(path: Path) -> int:
    """Offset of the data set in a file pynetdicom wrote (preamble + DICM + meta group)."""
    with open(path, "rb") as fh:
        head = fh.read(144)
    # (0002,0000) File Meta Information Group Length, UL, explicit VR: value at bytes 140..144
    group_len = int.from_bytes(head[140:144], "little")
    return 144 + group_len


def start_scp(
    handlers: ScpHandlers,
    options: ScpOptions,
    sock: socket.socket | None = None,
    load: WorkerSlot | None = None,
    accept_in_caller: bool = False,
) -> RunningScp:
    """Start a listener in background threads and return it; raises NetworkError when the
    address cannot be bound. With `sock`, serve that already-listening socket instead; with
    `load`, as one of several workers sharing it (see `net.balance`). With `accept_in_caller`,
    no thread accepts: the caller runs `RunningScp.accept_here` (a worker's main thread)."""
    if options.temp_dir is not None:
        Path(options.temp_dir).mkdir(parents=True, exist_ok=True)
        receive.set_temp_dir(Path(options.temp_dir))

    ae = AcceptorAE(ae_title=options.ae_title)
    ae.maximum_associations = max(1, options.max_associations)
    ae.maximum_pdu_size = options.maximum_pdu_size
    ae.acse_timeout = options.acse_timeout
    ae.dimse_timeout = options.dimse_timeout
    ae.network_timeout = options.network_timeout
    ae.require_called_aet = True
    if options.allow:
        ae.require_calling_aet = list(options.allow)
    ae.add_supported_context(Verification)
    for uid in _MODELS:
        ae.add_supported_context(uid)
    # Storage contexts are negotiated by UNRESTRICTED_STORAGE_SERVICE (any class, first
    # proposed syntax, SCP/SCU role selection honoured for C-GET).

    d = _Dispatcher(handlers, options)
    if fastpath.install(options.fast_path):  # else pynetdicom's own code serves
        faststore.enable(ae, d.store_received)
    handlers_list: list[Any] = [
        (evt.EVT_C_ECHO, d.on_echo),
        (evt.EVT_C_STORE, d.on_store),
        (evt.EVT_C_FIND, d.on_find),
        (evt.EVT_C_MOVE, d.on_move),
        (evt.EVT_C_GET, d.on_get),
        (evt.EVT_ESTABLISHED, d.on_established),
        (evt.EVT_REJECTED, d.on_rejected),
        (evt.EVT_RELEASED, d.on_released),
        (evt.EVT_ABORTED, d.on_aborted),
    ]
    ssl_context = tls.server_context(options.tls) if options.tls else None
    try:
        server = ae.make_server(
            (options.host, options.port),
            ae_title=options.ae_title,
            ssl_context=ssl_context,
            evt_handlers=handlers_list,
            server_class=type(
                "_BoundServer",
                (Server,),
                {"adopt_socket": sock, "load": load, "_counted": set(), "_counted_lock": threading.Lock()},
            ),
            request_handler=ConnectionHandler,
        )
    except OSError as exc:
        raise NetworkError(
            f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}",
            hint="is another node using the port? choose another port",
        ) from exc
    server = _configure(server, options, d)
    if not accept_in_caller:
        thread = threading.Thread(
            target=partial(server.serve_forever, poll_interval=_POLL),
            name=f"pacsctl-scp-{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
    ae._servers.append(server)
    return RunningScp(ae, server, options)


def _configure(server: Any, options: ScpOptions, d: _Dispatcher) -> Server:
    server.limit(
        max(16, options.max_associations * 4), options.acse_timeout, options.network_timeout, d.on_refused
    )
    return server
