"""Receiving PDUs without copying their data.

pynetdicom reads a PDU into a bytearray, appends the body to the 6-byte header (a copy), turns
the whole into bytes (a copy), slices each presentation data value out of it (a copy), and its
DIMSE decoder slices the value past its control header byte (a copy) before writing it to the
data set file: four copies of every received data set, besides pydicom-free but generic item
decoding. This reader keeps pynetdicom's events and error handling and hands P-DATA-TF values
on as views of the one buffer the body was received into; the DIMSE decoder's slice of a view
is a view, and what it writes or copies into its BytesIO is the same bytes. Other PDU types,
and any association with a handler bound to the raw-PDU events, take pynetdicom's decoder.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_items import PresentationDataValueItem

from pacsctl.net.fastpath import faststore

LOGGER = logging.getLogger("pynetdicom.dul")

_PDU_TYPES = frozenset(range(0x01, 0x08))
_P_DATA_TF = 0x04
_RAW_PDU_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV)


def decode_p_data(body: bytearray) -> P_DATA_TF:
    """A P-DATA-TF PDU from its body (after the 6-byte header), each value a view of `body`.

    Raises ValueError when the items do not exactly fill the body (PS3.8 9.3.5.1)."""
    view = memoryview(body)
    items = []
    offset, end = 0, len(body)
    while offset < end:
        if offset + 6 > end:
            raise ValueError("truncated presentation data value item")
        (length,) = struct.unpack_from(">L", body, offset)
        if length < 2 or offset + 4 + length > end:
            raise ValueError("presentation data value item length out of bounds")
        item = PresentationDataValueItem()
        item.presentation_context_id = body[offset + 4]
        item.presentation_data_value = view[offset + 5 : offset + 4 + length]  # type: ignore[assignment]
        items.append(item)
        offset += 4 + length
    pdu = P_DATA_TF()
    pdu.presentation_data_value_items = items
    return pdu


def _read_pdu_data(self: DULServiceProvider) -> None:
    """pynetdicom's `DULServiceProvider._read_pdu_data`, same events (Evt17 for a closed or
    short connection, Evt19 for an unknown or undecodable PDU), without the copies. While a
    data set is arriving for faststore, its PDUs are read one after the other here, without
    a trip through the reactor loop for each (its readiness select, timers and queues)."""
    while _read_one_pdu(self) and getattr(self, "_pacsctl_incoming", None) is not None:
        pass


def _read_one_pdu(self: DULServiceProvider) -> bool:
    """Read one PDU and pass it on; True when faststore took all of it."""
    sock = self.socket
    assert sock is not None
    try:
        header = sock.recv(6)
    except (OSError, TimeoutError):
        LOGGER.error("Connection closed before the entire PDU was received")
        self.event_queue.put("Evt17")
        return False
    if len(header) != 6:
        self.event_queue.put("Evt17")
        return False
    pdu_type, _, pdu_length = struct.unpack(">BBL", header)
    if pdu_type not in _PDU_TYPES:
        LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        self.event_queue.put("Evt19")
        return False
    try:
        body = sock.recv(pdu_length) if pdu_length else bytearray()
    except (OSError, TimeoutError):
        LOGGER.error("Connection closed before the entire PDU was received")
        self.event_queue.put("Evt17")
        return False
    if len(body) != pdu_length:
        LOGGER.error(
            f"The received PDU is shorter than expected ({6 + len(body)} of {6 + pdu_length} bytes received)"
        )
        self.event_queue.put("Evt17")
        return False
    pdu: Any
    fast = pdu_type == _P_DATA_TF and not any(self.assoc.get_handlers(e) for e in _RAW_PDU_EVENTS)
    try:
        if fast:
            pdu, event = decode_p_data(body), "Evt10"
        else:
            pdu, event = self._decode_pdu(bytearray(header) + body)
    except Exception:
        LOGGER.error("Unable to decode the received PDU data")
        self.event_queue.put("Evt19")
        return False
    if fast:
        pdu = faststore.serve_p_data(self, pdu)
        if pdu is None:  # served here: nothing for pynetdicom's state machine
            return True
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)
    return False


# What `pacsctl.net.fastpath.install` swaps in: (owner, attribute, replacement).
PATCHES = ((DULServiceProvider, "_read_pdu_data", _read_pdu_data),)
# Attributes of pynetdicom objects this module relies on besides those it replaces.
USES = ((DULServiceProvider, ("socket", "event_queue", "_recv_pdu", "_decode_pdu", "assoc")),)
