"""Latency tuning of pynetdicom's polling reactors: wait for the event, not for a timer.

Measured (null C-STORE handler, DCMTK storescu, 512 KB instances, loopback, 1 MB PDUs):
about 3.1-3.9 ms per instance, about 2 ms of it sleeping. pynetdicom moves each message
between two polling threads: the DUL reactor sleeps 1 ms whenever it finds nothing to do, and
the association reactor sleeps 1 ms before every look at its message queue. A request waits up
to ~1 ms to be picked up, and its response up to ~1 ms to be sent. Polling faster instead
(tried: 50 us sleeps while busy) cut the latency but burnt ~4 ms of CPU per instance spinning,
which the 2-core machine needs for the work itself.

The remedy keeps pynetdicom's code and swaps the `time` module its two reactors see for one
whose `sleep` waits on what the thread is actually waiting for:
- an association thread waits on its DIMSE message queue (woken by the put),
- a DUL thread waits in select() on its socket and on an eventfd that `send_pdu` signals,
each for at most the delay pynetdicom asked for, so timers and flags are still polled as
before and nothing can wait longer than it did.
"""

from __future__ import annotations

import os
import re
import select
import threading
import time as _time
import weakref
from types import SimpleNamespace
from typing import Any

from pydicom.uid import RE_VALID_UID, UID
from pynetdicom import _config as _pynetdicom_config
from pynetdicom import association as _association
from pynetdicom import dimse_primitives as _dimse_primitives
from pynetdicom import dul as _dul
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from pacsctl.net.fastpath.faststore import encode_c_store_rsp

# An acceptor's reactor has nothing to do between the events that wake it (a DIMSE message, a
# primitive from its DUL thread: release, abort); it looks at its timers this often.
ACCEPTOR_POLL = 0.02


def _association_wait(assoc: Association, seconds: float) -> None:
    q = assoc.dimse.msg_queue
    acceptor = assoc.is_acceptor
    if acceptor:
        # pynetdicom polls every 1 ms; each wake-up takes the GIL from the threads doing the
        # work (measured: ~40% of a 4-association run's futex calls). Requestors keep 1 ms:
        # their send_* callers wait for the reactor to pause.
        _wake_on_dul_primitives(assoc)
        seconds = max(seconds, ACCEPTOR_POLL)
    with q.not_empty:
        if not q._qsize():
            q.not_empty.wait(seconds)
            if q._qsize():
                # Queue.put wakes one waiter. It may have been meant for a thread blocked in
                # get() on this queue (a send_c_store waiting for its response): pass it on.
                q.not_empty.notify()
            return
    if not acceptor:  # a message is waiting for a send_* caller: the reactor waits for more
        _time.sleep(seconds)


def _wake_on_dul_primitives(assoc: Association) -> None:
    """Have the DUL thread's primitives for the association (A-RELEASE, A-ABORT, ...) wake its
    reactor as DIMSE messages do (once per association)."""
    dul = assoc.dul
    if getattr(dul, "_pacsctl_wakes_reactor", False):
        return
    dul._pacsctl_wakes_reactor = True  # type: ignore[attr-defined]
    put, not_empty = dul.to_user_queue.put, assoc.dimse.msg_queue.not_empty

    def put_and_wake(item: Any, *args: Any, **kwargs: Any) -> None:
        put(item, *args, **kwargs)
        with not_empty:
            not_empty.notify_all()

    dul.to_user_queue.put = put_and_wake  # type: ignore[method-assign]


def _wake_fd(provider: DULServiceProvider) -> int | None:
    fd = getattr(provider, "_pacsctl_wake", None)
    if fd is None and hasattr(os, "eventfd"):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        provider._pacsctl_wake = fd  # type: ignore[attr-defined]
        weakref.finalize(provider, os.close, fd)
    return fd


def _dul_wait(provider: DULServiceProvider, seconds: float) -> None:
    wake = _wake_fd(provider)
    sock = getattr(getattr(provider, "socket", None), "socket", None)
    if wake is None or sock is None:
        _time.sleep(seconds)
        return
    try:
        ready, _, _ = select.select([sock, wake], [], [], seconds)
    except (OSError, ValueError):  # socket closed under us
        _time.sleep(seconds)
        return
    if wake in ready:
        try:
            os.eventfd_read(wake)
        except OSError:
            pass


def _sleep(seconds: float) -> None:
    thread = threading.current_thread()
    if isinstance(thread, Association):
        _association_wait(thread, seconds)
    elif isinstance(thread, DULServiceProvider):
        _dul_wait(thread, seconds)
    else:
        _time.sleep(seconds)


_original_send_pdu = DULServiceProvider.send_pdu


def _send_pdu(self: DULServiceProvider, primitive: object) -> None:
    _original_send_pdu(self, primitive)  # type: ignore[arg-type]
    fd = getattr(self, "_pacsctl_wake", None)
    if fd is not None:
        try:
            os.eventfd_write(fd, 1)
        except OSError:
            pass


_PREALLOC_CAP = 4 << 20  # never trust a peer's PDU length for an up-front allocation
_RECV_CHUNK = 1 << 20


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """pynetdicom's `AssociationSocket.recv`, without its 4 KB reads: a 512 KB data set took
    ~130 recv() calls and as many bytearray extends. Reads straight into one buffer, in chunks
    of up to 1 MB; the buffer grows with what actually arrives (a hostile PDU length of 4 GB
    allocates nothing it is not sent)."""
    sock = self.socket
    assert sock is not None
    buf = bytearray(min(nr_bytes, _PREALLOC_CAP))
    nr_read = 0
    while nr_read < nr_bytes:
        if nr_read == len(buf):
            buf.extend(bytes(min(len(buf), nr_bytes - len(buf))))  # double, up to nr_bytes
        with memoryview(buf) as view:
            got = sock.recv_into(view[nr_read:], min(len(buf) - nr_read, _RECV_CHUNK))
        if not got:  # connection closed: return what there is, as pynetdicom does
            del buf[nr_read:]
            return buf
        nr_read += got
    return buf


_conformant_uid = re.compile(RE_VALID_UID).match
_pynetdicom_set_uid = _dimse_primitives.set_uid


def _set_uid(
    value: Any, name: str, allow_empty: bool = True, allow_none: bool = True, validate: bool = True
) -> UID | None:
    """pynetdicom's `set_uid` for DIMSE primitives (several UIDs per message), with the common
    case first: a conformant UID of 1-64 characters passes its validator and is not warned
    about, so it is returned as a UID at once (pynetdicom re-checked it with an uncompiled
    regex and copied it into a new UID). Everything else goes to pynetdicom's function."""
    if (
        isinstance(value, str)
        and validate
        and 0 < len(value) < 65
        and not _pynetdicom_config.ENFORCE_UID_CONFORMANCE
        and _conformant_uid(value)
    ):
        return value if type(value) is UID else UID(value)
    return _pynetdicom_set_uid(value, name, allow_empty, allow_none, validate)


def _shim() -> SimpleNamespace:
    ns = SimpleNamespace(**{k: getattr(_time, k) for k in dir(_time) if not k.startswith("__")})
    ns.sleep = _sleep
    return ns


# -- C-STORE responses -------------------------------------------------------------------------
# pynetdicom turns every response primitive into a pydicom Dataset, validates it, and encodes
# it with pydicom (~0.5-1 ms of CPU per C-STORE here). A plain C-STORE-RSP is six fixed
# elements: encode them directly (implicit VR little endian, PS3.7 table 9.3-2).

_original_send_msg = DIMSEServiceProvider.send_msg


def _send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    if (
        type(primitive) is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status is not None
        and primitive.AffectedSOPClassUID
        and primitive.AffectedSOPInstanceUID
        and primitive.ErrorComment is None
        and primitive.OffendingElement is None
        and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
    ):
        pdata = P_DATA()
        pdata.presentation_data_value_list.append(
            (
                context_id,
                b"\x03"
                + encode_c_store_rsp(
                    primitive.AffectedSOPClassUID,
                    primitive.MessageIDBeingRespondedTo,
                    primitive.Status,
                    primitive.AffectedSOPInstanceUID,
                ),
            )
        )
        self.dul.send_pdu(pdata)
        return
    _original_send_msg(self, primitive, context_id)


# What `pacsctl.net.fastpath.install` swaps in: (owner, attribute, replacement). The reactors'
# `time` module is replaced by a shim whose sleep waits for the event.
_SHIM = _shim()
PATCHES = (
    (_association, "time", _SHIM),
    (_dul, "time", _SHIM),
    (DULServiceProvider, "send_pdu", _send_pdu),
    (AssociationSocket, "recv", _recv),
    (DIMSEServiceProvider, "send_msg", _send_msg),
    (_dimse_primitives, "set_uid", _set_uid),
)
# Attributes of pynetdicom objects this module and faststore rely on besides those replaced.
USES = (
    (
        Association,
        (
            "dimse",
            "dul",
            "ae",
            "is_acceptor",
            "is_requestor",
            "get_handlers",
            "_accepted_cx",
            "_sent_release",
            "acceptor",
            "requestor",
        ),
    ),
    (DULServiceProvider, ("to_user_queue", "socket", "state_machine", "event_queue", "assoc")),
    (DIMSEServiceProvider, ("msg_queue", "message", "dul", "assoc")),
    (AssociationSocket, ("socket",)),
)
