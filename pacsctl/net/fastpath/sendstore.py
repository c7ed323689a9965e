"""The send fast path: a stored file C-STOREd as it is, without pynetdicom's per-message work.

Measured (`benchmarks/bench_send.py`, 1000 CT files of 512 KB to DCMTK storescp): pynetdicom's
`send_c_store` costs several ms per instance beside the bytes: pydicom reads the File Meta
(`split_dataset`), builds and encodes the command set through a Dataset, and every 16 KB
fragment becomes a P-DATA primitive queued to the DUL thread, which encodes and sends each
PDU after its 1 ms polling sleeps. Here, for a file sent in its stored syntax (the common
case): the File Meta is scanned by hand (`file_meta`), the command set written by hand
(`encoding`), the whole message framed into P-DATA-TF PDUs and written to the socket in one
`sendall` by the sending thread, and the response taken from pynetdicom's DIMSE queue as
`send_c_store` takes it (the DUL thread still reads and decodes everything the peer sends,
so releases, aborts and time-outs are pynetdicom's).

Only over plain TCP (an SSL socket must not be written by one thread while another reads
it), and only while the association is idle (nothing else is sent on a requestor's
association while its one C-STORE is outstanding). `usable()` checks once that pynetdicom
has every attribute used; `PACSCTL_FAST_PATH=0` turns it off with the receive fast path.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import association as _association
from pynetdicom import dimse as _dimse
from pynetdicom import dul as _dul
from pynetdicom import transport as _transport

from pacsctl.net.fastpath import encoding

_PREAMBLE = 128
_C_STORE_RQ = 0x0001
_DATA_SET_PRESENT = 0x0001  # CommandDataSetType as pynetdicom sends it (anything but 0x0101)
_PRIORITY_MEDIUM = 0x0000
_IOV_MAX = 512  # buffers per sendmsg (Linux allows 1024)
_META_LIMIT = 1 << 16  # a File Meta group larger than this is left to pydicom
_EXPLICIT_LONG = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})

# What this module reads of pynetdicom: (owner, attribute names), checked by `usable()`.
USES = (
    (_association.Association, ("dul", "dimse", "acceptor", "_reactor_checkpoint", "is_established")),
    (_dul.DULServiceProvider, ("socket",)),
    (_transport.AssociationSocket, ("socket",)),
    (_dimse.DIMSEServiceProvider, ("get_msg", "maximum_pdu_size")),
)


class WriteFailed(Exception):
    """The message could not be written whole: the association is broken.

    (A plain exception: a frozen dataclass without fields takes no message, so raising it
    with one was a TypeError that killed the sending thread when a link broke mid-write.)"""


@dataclass(frozen=True)
class RawMeta:
    """What a send needs of a Part-10 file's File Meta group, scanned without pydicom."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    data_offset: int  # where the data set starts


def file_meta(path: str | Path) -> RawMeta | None:
    """The File Meta of the Part-10 file at `path` (preamble, DICM, group 0002 in explicit VR
    little endian, with its group length), or None when it is anything else: pydicom then
    reads it (`sending.file_info`). Raises OSError when the file cannot be read."""
    with open(path, "rb") as fh:
        head = fh.read(_PREAMBLE + 4 + 12)
        if len(head) < _PREAMBLE + 16 or head[_PREAMBLE : _PREAMBLE + 4] != b"DICM":
            return None
        tag, vr, length = struct.unpack_from("<I2sH", head, _PREAMBLE + 4)
        if tag != 0x00000002 or vr != b"UL" or length != 4:  # (0002,0000) UL, stored as group<<0
            return None
        (group_length,) = struct.unpack_from("<I", head, _PREAMBLE + 12)
        if group_length > _META_LIMIT:
            return None
        body = fh.read(group_length)
    if len(body) != group_length:
        return None
    values = _meta_values(body)
    if values is None:
        return None
    try:
        sop_class, sop_instance, ts = (values[e].rstrip(b"\x00 ").decode("ascii") for e in (2, 3, 0x10))
    except (KeyError, UnicodeDecodeError):
        return None
    if not (encoding.is_uid(sop_class) and encoding.is_uid(sop_instance) and encoding.is_uid(ts)):
        return None
    return RawMeta(sop_class, sop_instance, ts, _PREAMBLE + 4 + 12 + group_length)


def _meta_values(body: bytes) -> dict[int, bytes] | None:
    """Element number -> value of the explicit VR little endian group 0002 in `body`."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(body)
    while pos < end:
        if pos + 8 > end:
            return None
        grp, elem, vr = struct.unpack_from("<HH2s", body, pos)
        if grp != 0x0002:
            return None
        if vr in _EXPLICIT_LONG:
            if pos + 12 > end:
                return None
            (length,) = struct.unpack_from("<I", body, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", body, pos + 6)
            pos += 8
        if pos + length > end:
            return None
        values[elem] = body[pos : pos + length]
        pos += length
    return values


def c_store_rq(
    sop_class_uid: str,
    sop_instance_uid: str,
    message_id: int,
    originator_aet: str | None = None,
    originator_id: int | None = None,
) -> bytes:
    """The command set of a C-STORE-RQ (implicit VR little endian, PS3.7 9.3.1.1)."""
    elements = [
        encoding.element(0x0000, 0x0002, encoding.uid_value(sop_class_uid)),
        encoding.element(0x0000, 0x0100, encoding.us(_C_STORE_RQ)),
        encoding.element(0x0000, 0x0110, encoding.us(message_id)),
        encoding.element(0x0000, 0x0700, encoding.us(_PRIORITY_MEDIUM)),
        encoding.element(0x0000, 0x0800, encoding.us(_DATA_SET_PRESENT)),
        encoding.element(0x0000, 0x1000, encoding.uid_value(sop_instance_uid)),
    ]
    if originator_aet:
        elements.append(encoding.element(0x0000, 0x1030, encoding.text_value(originator_aet, 16)))
    if originator_id is not None:
        elements.append(encoding.element(0x0000, 0x1031, encoding.us(originator_id)))
    return encoding.group(0x0000, elements, explicit=False)


def p_data_pdus(
    context_id: int, command: bytes, data: memoryview | bytes, max_pdu: int
) -> list[bytes | memoryview]:
    """The P-DATA-TF PDUs carrying one message (PS3.8 9.3.5, E.2) as buffers to write in
    order: the command, then the data set, each cut into fragments that fit the peer's
    maximum PDU length (0: no limit), one PDV per PDU, the last fragment of each flagged as
    such. The data set's fragments are views of `data`, not copies."""
    out: list[bytes | memoryview] = []
    fragment = max_pdu - 6 if max_pdu else max(len(command), len(data), 1)
    for payload, kind in ((memoryview(command), 0x01), (memoryview(data), 0x00)):
        total = len(payload)
        for start in range(0, total, fragment):
            piece = payload[start : start + fragment]
            last = 0x02 if start + fragment >= total else 0x00
            out.append(
                struct.pack(">BBIIBB", 0x04, 0, len(piece) + 6, len(piece) + 2, context_id, kind | last)
            )
            out.append(piece)
    return out


def _send_buffers(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    """Write `buffers` in order with as few system calls as the kernel allows (sendmsg
    gathers them; a partial write goes on from where it stopped)."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views[:_IOV_MAX])
        while sent and views:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


def _plain_socket(assoc: Any) -> Any:
    """The association's TCP socket, or None (TLS, or already closed)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return None
    return sock


def can_send(assoc: Any) -> bool:
    """Whether a file can go over `assoc` on this path (plain TCP, established)."""
    return assoc.is_established and _plain_socket(assoc) is not None


def send_stored(
    assoc: Any,
    path: str | Path,
    data_offset: int,
    context_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    message_id: int,
    originator_aet: str | None = None,
    originator_id: int | None = None,
    prefetch: tuple[str | Path, int] | None = None,
) -> int | None:
    """C-STORE the data set of the file at `path` (from `data_offset`, bytes as stored) under
    the accepted presentation context `context_id`; return the peer's status, or None when
    no response came within the DIMSE timeout or the association went. Raises OSError when
    the file cannot be read (nothing was sent), WriteFailed when the socket write failed.

    `prefetch` (the next file's path and data offset) is read while the peer stores this one
    and answers (the thread would only wait then); the next call for it takes those bytes."""
    data = _take_prefetched(assoc, path, data_offset)
    if data is None:
        data = _read_data_set(path, data_offset)
    command = c_store_rq(sop_class_uid, sop_instance_uid, message_id, originator_aet, originator_id)
    pdus = p_data_pdus(context_id, command, data, int(assoc.dimse.maximum_pdu_size or 0))
    sock = _plain_socket(assoc)
    if sock is None:
        raise WriteFailed("the association has no open socket")
    checkpoint = assoc._reactor_checkpoint
    checkpoint.clear()  # as send_c_store: the reactor must not take our response
    try:
        try:
            _send_buffers(sock, pdus)
        except OSError as exc:
            raise WriteFailed(str(exc.strerror or exc)) from None
        if prefetch is not None:
            _prefetch(assoc, *prefetch)
        _cx_id, rsp = assoc.dimse.get_msg(block=True)
        if rsp is None and assoc.is_established:
            # The DIMSE time-out on a link gone silent: abort, as send_c_store does. Else the
            # next file goes on the dead association (a time-out each), and a late answer
            # would be taken for the next file's.
            assoc.abort()
    finally:
        checkpoint.set()
    status = getattr(rsp, "Status", None)
    return None if status is None else int(status)


def _read_data_set(path: str | Path, data_offset: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(data_offset)
        return fh.read()


_PREFETCHED = "_pacsctl_prefetched"  # association attribute: (path, offset, bytes)


def _prefetch(assoc: Any, path: str | Path, data_offset: int) -> None:
    """Read the next file's data set ahead; a file that cannot be read now is left for its
    own send to fail on (with its own error)."""
    try:
        setattr(assoc, _PREFETCHED, (str(path), data_offset, _read_data_set(path, data_offset)))
    except OSError:
        setattr(assoc, _PREFETCHED, None)


def _take_prefetched(assoc: Any, path: str | Path, data_offset: int) -> bytes | None:
    """The bytes `_prefetch` read for this file on this association, once; None otherwise."""
    ahead = getattr(assoc, _PREFETCHED, None)
    if ahead is None:
        return None
    setattr(assoc, _PREFETCHED, None)
    ahead_path, ahead_offset, data = ahead
    return data if (ahead_path, ahead_offset) == (str(path), data_offset) else None


def usable() -> bool:
    """Whether this pynetdicom has everything this module uses, and the switch is on."""
    from pacsctl.net.fastpath import _has, enabled_by_default

    if not enabled_by_default():
        return False
    return all(_has(owner, name) for owner, names in USES for name in names)


_USABLE: bool | None = None


def enabled() -> bool:
    """`usable()`, decided once per process (the environment switch read then)."""
    global _USABLE
    if _USABLE is None:
        _USABLE = usable()
    return _USABLE
