"""SCU operations against a remote node: echo, store, find, move, get.

Every function opens one association, does its job and releases it. Failing to connect, being
rejected or aborted, and timeouts raise `NetworkError`; per-instance outcomes are returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import StoragePresentationContexts, build_role, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
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
from pacsctl.errors import NetworkError, NetworkFailure, OperationInterrupted
from pacsctl.net import connect, sending, tls
from pacsctl.net import scp as _scp  # noqa: F401  (temp dir for received data sets, C-GET)
from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import (
    STATUS_PENDING,
    STATUS_PROCESSING_FAILURE,
    AuditHandler,
    NodeLike,
    QueryModel,
    RetrieveCounts,
    StoreFailure,
    StoreRequest,
    StoreResult,
    TlsOptions,
)

LOG = logging.getLogger(__name__)

DEFAULT_CALLING_AET = "PACSCTL"

_FIND = {"P": PatientRootQueryRetrieveInformationModelFind, "S": StudyRootQueryRetrieveInformationModelFind}
_MOVE = {"P": PatientRootQueryRetrieveInformationModelMove, "S": StudyRootQueryRetrieveInformationModelMove}
_GET = {"P": PatientRootQueryRetrieveInformationModelGet, "S": StudyRootQueryRetrieveInformationModelGet}


def node_tls(node: NodeLike) -> TlsOptions | None:
    """The TLS options of a node, or None for plain TCP."""
    if not getattr(node, "tls", False):
        return None
    return TlsOptions(
        cert=node.tls_cert,
        key=node.tls_key,
        ca=node.tls_ca,
        check_hostname=not getattr(node, "tls_no_hostname_check", False),
    )


@contextmanager
def associate(
    node: NodeLike,
    contexts: list[PresentationContext],
    calling_aet: str = DEFAULT_CALLING_AET,
    ext_neg: list[Any] | None = None,
    evt_handlers: list[Any] | None = None,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
    on_cancel: Callable[[Association], None] | None = None,
) -> Iterator[Association]:
    """Open an association to `node`, yield it, release it (abort on error).

    With `cancel`, a stop request calls `on_cancel(assoc)` and aborts the association if it
    is still open after the grace period (the caller checks `cancel.requested` itself before
    each new message). Raises NetworkError, its `failure` saying what went wrong
    (connect.failure_of)."""
    probe = connect.ConnectProbe()
    ae = connect.ProbedAE(ae_title=calling_aet, probe=probe)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout  # also how long a lost peer blocks a pending request
    ae.network_timeout = max(timeout, 60.0)
    ae.connection_timeout = timeout
    ae.maximum_pdu_size = 0
    ae.requested_contexts = contexts
    address = connect.resolve(node)
    tls_opts = node_tls(node)
    kwargs: dict[str, Any] = {}
    if tls_opts is not None:
        # The name we were given, not the address: that is what the certificate is for.
        kwargs["tls_args"] = (tls.client_context(tls_opts), node.host)
    handlers = [sending.NODELAY_HANDLER, (evt.EVT_PDU_RECV, probe.on_pdu), *(evt_handlers or [])]
    start = time.monotonic()
    try:
        assoc = ae.associate(
            address, int(node.port), ae_title=node.aet, ext_neg=ext_neg, evt_handlers=handlers, **kwargs
        )
        if not assoc.is_established:
            raise connect.failure_of(
                assoc, probe, node, timeout, tls_opts is not None, waited=time.monotonic() - start
            )
    except BaseException:
        ae.shutdown()
        raise
    watch = (
        cancel.watching(assoc, on_cancel and (lambda: on_cancel(assoc)))
        if cancel is not None
        else nullcontext()
    )
    try:
        with watch:
            yield assoc
    except BaseException:
        if assoc.is_established:
            assoc.abort()
        raise
    else:
        if assoc.is_established:
            assoc.release()
    finally:
        ae.shutdown()


def echo(node: NodeLike, calling_aet: str = DEFAULT_CALLING_AET, timeout: float = 30.0) -> float:
    """C-ECHO `node`; return the round trip in seconds. Raises NetworkError on failure."""
    start = time.perf_counter()
    with associate(node, [build_context(Verification)], calling_aet, timeout=timeout) as assoc:
        rsp = assoc.send_c_echo()
        status = getattr(rsp, "Status", None)
    if status is None:
        raise NetworkError(
            f"C-ECHO to {node.aet}: no response (timeout or abort)", failure=NetworkFailure.LOST
        )
    if status != 0x0000:
        raise NetworkError(
            f"C-ECHO to {node.aet} failed (status {_hex(status)})", failure=NetworkFailure.STATUS
        )
    return time.perf_counter() - start


def store(
    node: NodeLike,
    paths: Iterable[str | Path],
    calling_aet: str = DEFAULT_CALLING_AET,
    progress: Callable[[StoreResult], None] | None = None,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
    decompress: sending.Decompress = sending.Decompress.LOSSLESS,
) -> list[StoreResult]:
    """C-STORE files to `node` over one association; return one result per file.

    Each file goes in its stored transfer syntax when the peer accepts it (sent from disk in
    chunks), else decompressed to uncompressed where `decompress` allows (a lossy image is
    not, by default: that file fails on its own). Unreadable files fail on their own. Once
    `cancel` is requested no further file is sent (`StoreFailure.INTERRUPTED`); the one in
    flight gets the grace period to be answered."""
    results: list[StoreResult] = []
    infos: list[sending.FileInfo] = []

    def report(res: StoreResult) -> None:
        results.append(res)
        if progress:
            progress(res)

    for p in paths:
        try:
            infos.append(sending.file_info(p))
        except Exception as exc:
            report(
                StoreResult(
                    str(p), None, None, f"not readable as DICOM: {exc}", failure=StoreFailure.UNREADABLE
                )
            )
    if not infos:
        return results
    if cancel is not None and cancel.requested:
        for info in infos:
            report(_interrupted(info))
        return results
    contexts = sending.contexts_for((i.sop_class_uid, i.transfer_syntax_uid) for i in infos)
    with associate(node, contexts, calling_aet, timeout=timeout, cancel=cancel) as assoc:
        for n, info in enumerate(infos):
            if cancel is not None and cancel.requested:
                report(_interrupted(info))
            elif not assoc.is_established:
                report(
                    StoreResult(
                        str(info.path),
                        info.sop_instance_uid,
                        None,
                        "association lost before it was sent",
                        failure=StoreFailure.NOT_SENT,
                    )
                )
            else:
                report(
                    _store_result(
                        info,
                        sending.send_file(
                            assoc,
                            info,
                            msg_id=(n % 65535) + 1,
                            decompress=decompress,
                            next_info=infos[n + 1] if n + 1 < len(infos) else None,
                        ),
                        cancel,
                    )
                )
    return results


def _interrupted(info: sending.FileInfo, in_flight: bool = False) -> StoreResult:
    error = (
        "interrupted while being sent: the peer may or may not have stored it"
        if in_flight
        else "not sent: interrupted"
    )
    return StoreResult(str(info.path), info.sop_instance_uid, None, error, failure=StoreFailure.INTERRUPTED)


def _store_result(info: sending.FileInfo, sent: sending.FileSent, cancel: Cancellation | None) -> StoreResult:
    if sent.status is None and cancel is not None and cancel.requested:
        return _interrupted(info, in_flight=sent.failure is StoreFailure.NO_RESPONSE)
    result = StoreResult(
        str(info.path), info.sop_instance_uid, sent.status, sent.error, sent.transfer_syntax_uid, sent.failure
    )
    if sent.status is not None and not result.ok:
        result.failure = StoreFailure.REFUSED
    return result


def find(
    node: NodeLike,
    identifier: Dataset,
    model: QueryModel = "S",
    calling_aet: str = DEFAULT_CALLING_AET,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> Generator[Dataset, None, None]:
    """C-FIND: yield each matching identifier (closing the generator early cancels the C-FIND
    and releases the association). `identifier` must carry QueryRetrieveLevel.
    Raises NetworkError when the peer answers a failure or the association breaks, and
    OperationInterrupted (aborting the association) once `cancel` is requested."""
    uid = _FIND[model]
    with associate(node, [build_context(uid)], calling_aet, timeout=timeout, cancel=cancel) as assoc:
        final = None
        responses = assoc.send_c_find(identifier, uid, msg_id=_FIND_MSG_ID)
        for status, ds in responses:
            if cancel is not None and cancel.requested:
                raise OperationInterrupted("query interrupted")
            code = getattr(status, "Status", None)
            if code in (0xFF00, 0xFF01):
                if ds is not None:
                    try:
                        yield ds
                    except GeneratorExit:  # the caller has enough: ask the peer to stop
                        _cancel_find(assoc, responses, uid)
                        return  # a released association, not an aborted one
                continue
            final = code
        if cancel is not None and cancel.requested:
            raise OperationInterrupted("query interrupted")
        if final is None:
            raise NetworkError(
                f"C-FIND on {node.aet}: no final response (timeout or abort)", failure=NetworkFailure.LOST
            )
        if final not in (0x0000, 0xFE00):
            raise NetworkError(
                f"C-FIND on {node.aet} ended with status {_hex(final)}", failure=NetworkFailure.STATUS
            )


_FIND_MSG_ID = 1  # one C-FIND per association: a C-CANCEL names this one


def _cancel_find(assoc: Association, responses: Iterator[Any], sop_class: str) -> None:
    """Send a C-CANCEL for the running C-FIND and read its remaining responses up to the final
    one (Cancel, or Success when the peer had finished), so the association can be released."""
    if not assoc.is_established:
        return
    assoc.send_c_cancel(_FIND_MSG_ID, query_model=sop_class)
    for _status, _ds in responses:
        pass


def move(
    node: NodeLike,
    destination_aet: str,
    identifier: Dataset,
    model: QueryModel = "S",
    calling_aet: str = DEFAULT_CALLING_AET,
    progress: Callable[[RetrieveCounts], None] | None = None,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> RetrieveCounts:
    """C-MOVE the matches of `identifier` from `node` to `destination_aet`; return the final
    sub-operation counts as the peer reported them (count what arrived yourself too).

    Once `cancel` is requested the peer gets a C-CANCEL (and the association is aborted after
    the grace period); the counts so far are returned, the caller knows it was cancelled."""
    uid = _MOVE[model]
    with associate(
        node, [build_context(uid)], calling_aet, timeout=timeout, cancel=cancel, on_cancel=_c_cancel(uid)
    ) as assoc:
        return move_on(assoc, node, destination_aet, identifier, model, progress, cancel)


def move_on(
    assoc: Association,
    node: NodeLike,
    destination_aet: str,
    identifier: Dataset,
    model: QueryModel = "S",
    progress: Callable[[RetrieveCounts], None] | None = None,
    cancel: Cancellation | None = None,
) -> RetrieveCounts:
    """`move` over an association the caller holds (with the model's Move context), so that
    one association can carry many C-FINDs and C-MOVEs (each set-up costs ~25 ms here)."""
    counts = RetrieveCounts()
    uid = _MOVE[model]
    for status, ds in assoc.send_c_move(identifier, destination_aet, uid, msg_id=_RETRIEVE_MSG_ID):
        _update_counts(counts, status, ds)
        if progress and counts.status == STATUS_PENDING:
            progress(counts)
    return _final(counts, node, "C-MOVE", cancel)


def get(
    node: NodeLike,
    identifier: Dataset,
    store_cb: Callable[[StoreRequest], int],
    model: QueryModel = "S",
    calling_aet: str = DEFAULT_CALLING_AET,
    sop_classes: Iterable[str] | None = None,
    transfer_syntaxes: list[str] | None = None,
    progress: Callable[[RetrieveCounts], None] | None = None,
    timeout: float = 30.0,
    storage_contexts: list[PresentationContext] | None = None,
    cancel: Cancellation | None = None,
    audit: AuditHandler | None = None,
) -> RetrieveCounts:
    """C-GET the matches of `identifier` from `node`; each arriving instance is handed to
    `store_cb` (a `StoreRequest` as the SCP gets one), whose return value is the C-STORE status.

    Storage contexts are proposed with the SCP role for `sop_classes` (default: pynetdicom's
    127 most common storage classes) in `transfer_syntaxes` (default: uncompressed, so the
    peer decompresses when needed). `storage_contexts`, when given, replaces that set (e.g.
    one context per stored syntax, so the peer can send each instance as it holds it).
    `cancel` as for `move`; `audit` gets a record per sub-operation C-STORE (as an SCP's)."""
    uid = _GET[model]
    if storage_contexts is not None:
        storage = storage_contexts[: sending.MAX_REQUESTED_CONTEXTS - 1]
        classes = list(dict.fromkeys(str(cx.abstract_syntax) for cx in storage))
    else:
        syntaxes = transfer_syntaxes or list(sending.UNCOMPRESSED)
        classes = (
            list(sop_classes)
            if sop_classes is not None
            else [str(cx.abstract_syntax) for cx in StoragePresentationContexts]
        )
        classes = classes[: sending.MAX_REQUESTED_CONTEXTS - 1]
        storage = [build_context(c, syntaxes) for c in classes]
    contexts = [build_context(uid)] + storage
    roles = [build_role(c, scp_role=True) for c in classes]
    counts = RetrieveCounts()

    def on_store(event: evt.Event) -> int:
        req = _scp._Dispatcher(_scp.ScpHandlers(store=store_cb, audit=audit), _scp.ScpOptions())
        return req.on_store(event)

    with associate(
        node,
        contexts,
        calling_aet,
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        timeout=timeout,
        cancel=cancel,
        on_cancel=_c_cancel(uid),
    ) as assoc:
        for status, ds in assoc.send_c_get(identifier, uid, msg_id=_RETRIEVE_MSG_ID):
            _update_counts(counts, status, ds)
            if progress and counts.status == STATUS_PENDING:
                progress(counts)
    return _final(counts, node, "C-GET", cancel)


_RETRIEVE_MSG_ID = 1  # one C-MOVE/C-GET per association: the C-CANCEL names this one


def _c_cancel(sop_class: str) -> Callable[[Association], None]:
    """An on_cancel callback: ask the peer to stop the retrieve (it answers Cancel with the
    counts so far)."""

    def send(assoc: Association) -> None:
        if assoc.is_established:
            assoc.send_c_cancel(_RETRIEVE_MSG_ID, query_model=sop_class)

    return send


def _final(counts: RetrieveCounts, node: NodeLike, what: str, cancel: Cancellation | None) -> RetrieveCounts:
    """The counts, once a final response came (or a stop was requested); else LOST."""
    if counts.status in (None, STATUS_PENDING) and not (cancel is not None and cancel.requested):
        raise NetworkError(
            f"{what} on {node.aet}: no final response (timeout or abort)",
            hint="the node may have failed mid-way; its log says why",
            failure=NetworkFailure.LOST,
        )
    return counts


def _update_counts(counts: RetrieveCounts, status: Dataset, ds: Dataset | None) -> None:
    code = getattr(status, "Status", None)
    if code is None:  # timeout / abort: pynetdicom yields an empty Dataset
        return
    counts.status = int(code)
    counts.remaining = int(getattr(status, "NumberOfRemainingSuboperations", 0) or 0)
    counts.completed = int(getattr(status, "NumberOfCompletedSuboperations", 0) or 0)
    counts.failed = int(getattr(status, "NumberOfFailedSuboperations", 0) or 0)
    counts.warning = int(getattr(status, "NumberOfWarningSuboperations", 0) or 0)
    if ds is not None and "FailedSOPInstanceUIDList" in ds:
        value = ds.FailedSOPInstanceUIDList
        counts.failed_uids = [str(v) for v in ([value] if isinstance(value, str) else value)]


def _hex(status: int | None) -> str:
    return "none" if status is None else f"0x{status:04X}"


__all__ = ["echo", "store", "find", "move", "move_on", "get", "associate", "STATUS_PROCESSING_FAILURE"]
