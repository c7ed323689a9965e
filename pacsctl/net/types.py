"""Plain data types shared by the SCP and SCU sides of `pacsctl.net`.

`net` knows nothing about the archive: the server is driven by the callables in `ScpHandlers`,
which `pacsctl.node.service` builds over the archive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

from pydicom.dataset import Dataset

QueryModel = Literal["P", "S"]  # Patient Root / Study Root

# DICOM status codes used across the package (PS3.4 Annex B, C).
STATUS_SUCCESS = 0x0000
STATUS_CANCEL = 0xFE00
STATUS_PENDING = 0xFF00
STATUS_OUT_OF_RESOURCES = 0xA700  # refused, out of resources (C-STORE: disk full; C-FIND: time
#                                   budget spent)
STATUS_CANNOT_UNDERSTAND = 0xC000  # C-STORE: error, cannot understand (unparsable)
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_MOVE_DESTINATION_UNKNOWN = 0xA801
STATUS_IDENTIFIER_MISMATCH = 0xA900  # C-FIND: identifier, C-STORE: data set does not match the SOP class
STATUS_UNABLE_TO_PROCESS = 0xC001
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_WARNING = 0xB000  # C-STORE: kept, not as sent (here: in quarantine); C-MOVE/GET: some sub-ops failed
STATUS_SUB_OPERATIONS_FAILED = 0xA702  # C-MOVE/GET: refused, out of resources, every sub-operation failed


class StatusCategory(StrEnum):
    """What a DICOM status code means (PS3.7 C), as pynetdicom classifies it."""

    SUCCESS = "Success"
    WARNING = "Warning"
    FAILURE = "Failure"
    CANCEL = "Cancel"
    PENDING = "Pending"


def status_category(status: int) -> StatusCategory:
    """The category of a status code (0xB000-0xBFFF, 0x0001, 0x0107, 0x0116 are warnings)."""
    from pynetdicom.status import code_to_category

    return StatusCategory(code_to_category(status))


class NodeLike(Protocol):
    """What `net` needs to reach a remote node; `pacsctl.config.Node` has this shape."""

    aet: str
    host: str
    port: int
    tls: bool
    tls_cert: str | None
    tls_key: str | None
    tls_ca: str | None


@dataclass(frozen=True)
class TlsOptions:
    """TLS material. On a server, `ca` makes client certificates mandatory; on a client, `ca`
    verifies the server (None = system default store) and cert/key are the client identity;
    `check_hostname` (client only) wants the server's certificate issued for the host name
    we connect to."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    check_hostname: bool = True


@dataclass(frozen=True)
class Destination:
    """Where a C-MOVE destination AE title lives."""

    host: str
    port: int
    tls: TlsOptions | None = None


@dataclass(frozen=True)
class AssocInfo:
    """Who is on the other end of an association (no patient data)."""

    calling_aet: str
    called_aet: str
    peer_host: str
    peer_port: int


@dataclass(frozen=True)
class StoreRequest:
    """One received C-STORE, exactly as received.

    `path` is a DICOM file pynetdicom streamed the data set into: 128-byte preamble, `DICM`,
    a File Meta group built from the association (`file_meta`), then the data set bytes as they
    arrived from `data_offset` on, never decoded. The file lives in `ScpOptions.temp_dir`
    (same file system as the archive) so the receiver may fsync and rename it into place;
    whatever is left at `path` after the handler returns is deleted.
    """

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    assoc: AssocInfo
    path: Path
    data_offset: int
    move_originator_aet: str | None = None

    @property
    def file_meta(self) -> Dataset:
        """The File Meta group at the head of `path` (built on demand, as pydicom objects)."""
        from pydicom.uid import UID
        from pynetdicom.dsutils import create_file_meta

        return create_file_meta(
            sop_class_uid=UID(self.sop_class_uid),
            sop_instance_uid=UID(self.sop_instance_uid),
            transfer_syntax=UID(self.transfer_syntax_uid),
        )


@dataclass(frozen=True)
class QueryContext:
    """The association a C-FIND/MOVE/GET arrived on, a way to see a C-CANCEL, and the
    request's deadline (`time.monotonic()` value; None: no time budget)."""

    assoc: AssocInfo
    is_cancelled: Callable[[], bool] = lambda: False
    deadline: float | None = None

    def expired(self) -> bool:
        """True once the request has used its time budget (`ScpOptions.find_time_budget`)."""
        return self.deadline is not None and time.monotonic() >= self.deadline


class QueryRefusedError(Exception):
    """Raised by a find/locate handler that refuses a request: the SCP answers `status`.
    `detail` goes to the log, so it names attributes, never their values."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class StoreOutcome:
    """A store handler's answer when it has more to say than the status: `reason` goes to the
    audit record (UIDs and causes, never patient data)."""

    status: int
    reason: str | None = None


StoreHandler = Callable[[StoreRequest], "int | StoreOutcome"]
FindHandler = Callable[[QueryModel, Dataset, QueryContext], Iterator[Dataset]]
LocateHandler = Callable[[QueryModel, Dataset, QueryContext], list[str]]
DestinationHandler = Callable[[str], Destination | None]
AuditHandler = Callable[[dict[str, Any]], None]


@dataclass
class ScpHandlers:
    """The callables a server delegates to. Any left None answers as not supported/refused."""

    store: StoreHandler | None = None
    find: FindHandler | None = None
    locate: LocateHandler | None = None
    destination: DestinationHandler | None = None
    audit: AuditHandler | None = None


def _fast_path_default() -> bool:
    from pacsctl.net.fastpath import enabled_by_default

    return enabled_by_default()


@dataclass
class ScpOptions:
    """How the listener runs."""

    ae_title: str = "PACSCTL"
    host: str = "0.0.0.0"
    port: int = 11112  # 0 = let the kernel pick a free one
    allow: list[str] = field(default_factory=list)  # calling AE titles; empty = any
    max_associations: int = 32
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    maximum_pdu_size: int = 1 << 20  # large PDUs: fewer Python round trips per instance
    tls: TlsOptions | None = None
    temp_dir: Path | None = None  # where incoming data sets are streamed; archive's file system
    # A C-FIND that has not finished after this many seconds ends with 0xA700 (what it sent
    # stays sent): one query must not hold a worker however large the archive.
    find_time_budget: float = 30.0
    # The receive fast path (net.fastpath); False, or PACSCTL_FAST_PATH=0, serves through
    # pynetdicom's own code. Process-wide: the last listener started decides.
    fast_path: bool = field(default_factory=lambda: _fast_path_default())


class StoreFailure(Enum):
    """Why a file sent by the SCU side has no Success or Warning answer."""

    UNREADABLE = "unreadable"  # not readable as DICOM: never sent
    NOT_SENDABLE = "not sendable"  # no accepted context for it, or it cannot be decompressed
    REFUSED = "refused"  # the peer answered a failure status
    NO_RESPONSE = "no response"  # sent, never answered (time-out, or the association broke)
    NOT_SENT = "not sent"  # the association had gone before its turn: never tried
    INTERRUPTED = "interrupted"  # a stop was requested before or while it was sent


@dataclass
class StoreResult:
    """Outcome of one C-STORE sent by the SCU side."""

    path: str
    sop_instance_uid: str | None
    status: int | None  # None: never answered (see `failure`)
    error: str | None = None  # for people; decisions use `failure`
    transfer_syntax_uid: str | None = None  # what went on the wire
    failure: StoreFailure | None = None  # None when ok

    @property
    def ok(self) -> bool:
        """True for Success or a Warning (0xB000-0xB0FF, 0x0107, 0x0116)."""
        return self.status is not None and (
            self.status == STATUS_SUCCESS
            or 0xB000 <= self.status <= 0xB0FF
            or self.status in (0x0107, 0x0116)
        )


@dataclass
class RetrieveCounts:
    """Sub-operation counts from a C-MOVE or C-GET (the final response's figures)."""

    status: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0
    failed_uids: list[str] = field(default_factory=list)
