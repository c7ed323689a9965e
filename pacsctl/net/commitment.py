"""Storage Commitment, Push Model, as an SCU (PS3.4 J): ask a node to commit instances
(N-ACTION) and take its answer (N-EVENT-REPORT), the strongest proof a PACS can give that it
holds them and keeps them.

The report may come on the association of the N-ACTION or, as Orthanc does, on a new
association the node opens to us: `CommitmentListener` takes both and hands each report to the
request that waits for its Transaction UID.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

import pacsctl.net.setup  # noqa: F401  (pynetdicom settings)
from pacsctl.errors import NetworkError, NetworkFailure
from pacsctl.net import scu
from pacsctl.net.types import STATUS_SUCCESS, NodeLike

# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5).
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
_REQUEST_COMMITMENT = 1  # N-ACTION Action Type ID
_NO_SUCH_OBJECT = 0x0112  # Failure Reason: the node does not hold it


@dataclass
class CommitmentReport:
    """A node's answer for one transaction: what it committed, and what not with its Failure Reason."""

    transaction_uid: str
    committed: set[str] = field(default_factory=set)
    failed: dict[str, int] = field(default_factory=dict)


def _report_of(info: Dataset) -> CommitmentReport:
    report = CommitmentReport(str(info.get("TransactionUID", "")))
    for item in info.get("ReferencedSOPSequence", []) or []:
        report.committed.add(str(item.get("ReferencedSOPInstanceUID", "")))
    for item in info.get("FailedSOPSequence", []) or []:
        reason = item.get("FailureReason")
        report.failed[str(item.get("ReferencedSOPInstanceUID", ""))] = (
            int(reason) if reason is not None else _NO_SUCH_OBJECT
        )
    return report


class CommitmentListener:
    """Our end for N-EVENT-REPORTs: listens on `host:port` as `ae_title` while open."""

    def __init__(self, ae_title: str, host: str = "0.0.0.0", port: int = 0) -> None:
        self.ae_title = ae_title
        self._lock = threading.Lock()
        self._reports: dict[str, CommitmentReport] = {}
        self._arrived = threading.Condition(self._lock)
        self._ae = AE(ae_title=ae_title)
        self._ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        try:
            server = self._ae.start_server(
                (host, port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.on_report)]
            )
        except OSError as exc:
            raise NetworkError(
                f"cannot listen on {host}:{port} for Storage Commitment reports ({exc.strerror})",
                hint="the port is in use (a running `pacsctl serve`?): give another one",
                failure=NetworkFailure.REFUSED,
            ) from None
        assert server is not None  # non-blocking start_server returns the server
        self._server = server
        self.port = int(server.server_address[1])

    def on_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        """EVT_N_EVENT_REPORT handler (on our server, or on the N-ACTION's association)."""
        report = _report_of(event.event_information)
        with self._arrived:
            self._reports[report.transaction_uid] = report
            self._arrived.notify_all()
        return STATUS_SUCCESS, None

    def wait(self, transaction_uid: str, timeout: float) -> CommitmentReport | None:
        """The report for `transaction_uid`, or None if none came within `timeout` seconds."""
        with self._arrived:
            self._arrived.wait_for(lambda: transaction_uid in self._reports, timeout)
            return self._reports.pop(transaction_uid, None)

    def request(
        self,
        node: NodeLike,
        instances: Mapping[str, str],
        transaction_uid: str,
        calling_aet: str,
        timeout: float = 30.0,
    ) -> None:
        """N-ACTION: ask `node` to commit `instances` (SOP Instance UID -> SOP Class UID).
        Raises NetworkError when the node refuses or does not answer."""
        ds = Dataset()
        ds.TransactionUID = transaction_uid
        ds.ReferencedSOPSequence = []
        for uid, sop_class in instances.items():
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = uid
            ds.ReferencedSOPSequence.append(item)
        contexts = [build_context(StorageCommitmentPushModel)]
        handlers = [(evt.EVT_N_EVENT_REPORT, self.on_report)]
        with scu.associate(node, contexts, calling_aet, evt_handlers=handlers, timeout=timeout) as assoc:
            status, _ = assoc.send_n_action(
                ds, _REQUEST_COMMITMENT, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
            )
        code = getattr(status, "Status", None)
        if code is None:
            raise NetworkError(
                f"{node.aet} did not answer the Storage Commitment request (N-ACTION: time-out or abort)",
                hint=f"does {node.aet} know our AE title {calling_aet} (and where to send its report)?",
                failure=NetworkFailure.LOST,
            )
        if code != STATUS_SUCCESS:
            raise NetworkError(
                f"{node.aet} refused the Storage Commitment request (status 0x{code:04X})",
                hint="does the node support Storage Commitment (Push Model)?",
                failure=NetworkFailure.STATUS,
            )

    def close(self) -> None:
        """Stop listening."""
        self._server.shutdown()
        self._ae.shutdown()

    def __enter__(self) -> CommitmentListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
