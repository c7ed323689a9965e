"""C-STORE requests served in the association's DUL thread, without pynetdicom's DIMSE round trip.

pynetdicom hands every received message from the DUL thread (which reads the socket) to the
association thread (a queue and a wake-up), which runs the service class, triggers the
handler, builds and validates a response primitive and queues it back to the DUL thread
(another wake-up), which encodes and sends it. For a C-STORE-RQ on an established association
of a serving node, this module does the same work where the PDUs are read: the data set is
streamed into the same kind of file (`receive`), the node's store callable is called with the
same arguments, and the C-STORE-RSP is encoded and sent. What it cannot serve exactly as
pynetdicom would (a command set split over fragments, a message on an unknown context, raw
DIMSE event handlers bound, release in progress) takes pynetdicom's path, message by message.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF

from pacsctl.net.fastpath import encoding, receive

# (assoc, sop_class, sop_instance, transfer_syntax, stream, path, move_originator) -> status;
# sop_class/sop_instance None (and path None) for a command without valid ones: to be refused
StoreCallable = Callable[[Any, "str | None", "str | None", str, Any, "str | None", "str | None"], int]

# handlers that would miss what this module does without pynetdicom's messages and PDU objects
_BYPASSED_EVENTS = (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_SENT, evt.EVT_DATA_SENT)
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def enable(ae: Any, store: StoreCallable) -> None:
    """Serve the C-STOREs of `ae`'s associations with `store` (see the module docstring)."""
    ae._pacsctl_store = store


@dataclass
class _Incoming:
    """A C-STORE whose data set is arriving."""

    context_id: int
    message_id: int
    sop_class: str | None  # None: missing or not a UID (the request is refused)
    sop_instance: str | None
    transfer_syntax: str
    move_originator: str | None
    stream: Any


def serve_p_data(dul: DULServiceProvider, pdu: P_DATA_TF) -> P_DATA_TF | None:
    """Serve what `pdu` carries of C-STOREs this module handles; return the PDU with what is
    left for pynetdicom, or None when nothing is."""
    items = pdu.presentation_data_value_items
    incoming: _Incoming | None = getattr(dul, "_pacsctl_incoming", None)
    done = 0
    for item in items:
        value = cast(bytes, item.presentation_data_value)  # set on every decoded item
        if incoming is None:
            incoming = _begin(dul, cast(int, item.presentation_context_id), value)
            if incoming is None:
                break
        elif value[0] & 1 or item.presentation_context_id != incoming.context_id:
            # a command set before the data set ended: give up on this one, as pynetdicom would
            # mix it into its next message; the new command takes pynetdicom's path
            _discard(incoming)
            incoming = None
            break
        else:
            incoming.stream.write(value[1:])
            if value[0] & 2:
                _finish(dul, incoming)
                incoming = None
        done += 1
    dul._pacsctl_incoming = incoming  # type: ignore[attr-defined]
    if done == len(items):
        return None
    if done:
        pdu.presentation_data_value_items = items[done:]
    return pdu


def _begin(dul: DULServiceProvider, context_id: int, value: Any) -> _Incoming | None:
    """Start receiving a C-STORE whose whole command set is `value`, or None (not ours)."""
    if value[0] & 3 != 3:  # not a complete command set in one fragment
        return None
    assoc = dul.assoc
    store = getattr(assoc.ae, "_pacsctl_store", None)
    if (
        store is None
        or not assoc.is_acceptor
        or dul.state_machine.current_state != "Sta6"
        or assoc._sent_release
        or assoc.dimse.message is not None
        or not dul.event_queue.empty()
        or any(assoc.get_handlers(e) for e in _BYPASSED_EVENTS)
    ):
        return None
    command = receive.decode_store_command(bytes(value[1:]), strict=False)
    if command is None or command.CommandDataSetType == _NO_DATA_SET:
        return None
    context = assoc._accepted_cx.get(context_id)
    if context is None:
        return None
    sop_class, sop_instance = command.get("AffectedSOPClassUID"), command.get("AffectedSOPInstanceUID")
    syntax = str(context.transfer_syntax[0])
    if not command.has_valid_uids:
        # Answered once its data set is in, with a refusal (scp.store_received); nothing of it
        # is written anywhere.
        stream: Any = _Discarded()
    elif str(context.abstract_syntax) != sop_class:
        return None
    else:
        stream = receive.open_stream(sop_class, sop_instance, syntax)
    originator = command.get("MoveOriginatorApplicationEntityTitle")
    return _Incoming(
        context_id, command.MessageID, sop_class, sop_instance, syntax, originator or None, stream
    )


class _Discarded:
    """Where the data set of a request refused for its command goes: nowhere."""

    name = None
    closed = False

    def write(self, data: Any) -> int:
        return len(data)

    def close(self) -> None:
        self.closed = True


def abandon(dul: DULServiceProvider) -> None:
    """Drop the data set an aborted association was sending, and its temp file."""
    incoming = getattr(dul, "_pacsctl_incoming", None)
    if incoming is not None:
        dul._pacsctl_incoming = None  # type: ignore[attr-defined]
        _discard(incoming)


def _finish(dul: DULServiceProvider, incoming: _Incoming) -> None:
    """The data set is complete: store it, answer, and remove what the store left of the file."""
    store = dul.assoc.ae._pacsctl_store  # type: ignore[attr-defined]
    try:
        status = int(
            store(
                dul.assoc,
                incoming.sop_class,
                incoming.sop_instance,
                incoming.transfer_syntax,
                incoming.stream,
                incoming.stream.name,
                incoming.move_originator,
            )
        )
    finally:
        _discard(incoming)
    command = encode_c_store_rsp(incoming.sop_class, incoming.message_id, status, incoming.sop_instance)
    item = struct.pack(">LBB", len(command) + 2, incoming.context_id, 0x03) + command
    assert dul.socket is not None
    dul.socket.send(struct.pack(">BBL", 0x04, 0, len(item)) + item)


def _discard(incoming: _Incoming) -> None:
    incoming.stream.close()
    if incoming.stream.name is None:
        return
    try:
        os.unlink(incoming.stream.name)
    except FileNotFoundError:
        pass  # taken over by the archive


def encode_c_store_rsp(
    sop_class_uid: str | None, message_id: int, status: int, sop_instance_uid: str | None
) -> bytes:
    """The command set of a C-STORE-RSP (implicit VR little endian, PS3.7 9.3.1.2), without
    optional status elements. A UID that is None or not a UID (a malformed request's) is left
    out: those elements are conditional on the request having them."""

    def uid_element(elem: int, uid: str | None) -> list[bytes]:
        return [encoding.element(0x0000, elem, encoding.uid_value(uid))] if encoding.is_uid(uid) else []

    return encoding.group(
        0x0000,
        [
            *uid_element(0x0002, sop_class_uid),
            encoding.element(0x0000, 0x0100, encoding.us(_C_STORE_RSP)),
            encoding.element(0x0000, 0x0120, encoding.us(message_id)),
            encoding.element(0x0000, 0x0800, encoding.us(_NO_DATA_SET)),
            encoding.element(0x0000, 0x0900, encoding.us(status)),
            *uid_element(0x1000, sop_instance_uid),
        ],
        explicit=False,
    )
