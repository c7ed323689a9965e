"""The copy-free P-DATA-TF reader agrees with pynetdicom's decoder and refuses what it refuses."""

from __future__ import annotations

import struct

import pytest
from pynetdicom.pdu import P_DATA_TF

from pacsctl.net.fastpath.pdata import decode_p_data


def _item(context_id: int, value: bytes) -> bytes:
    return struct.pack(">LB", len(value) + 1, context_id) + value


def _pynetdicom(body: bytes) -> list[tuple[int, bytes]]:
    pdu = P_DATA_TF()
    pdu.decode(struct.pack(">BBL", 0x04, 0, len(body)) + body)
    return [(i.presentation_context_id, i.presentation_data_value) for i in pdu.presentation_data_value_items]


@pytest.mark.parametrize("values", [
    [(1, b"\x03" + b"command")],
    [(1, b"\x00" + bytes(range(256)) * 40), (3, b"\x02" + b"last fragment")],
    [(5, b"\x01")],
])
def test_values_are_views_equal_to_pynetdicoms_bytes(values) -> None:
    body = bytearray(b"".join(_item(c, v) for c, v in values))
    ours = [(i.presentation_context_id, i.presentation_data_value) for i in decode_p_data(body).presentation_data_value_items]
    assert [(c, bytes(v)) for c, v in ours] == _pynetdicom(bytes(body)) == values
    assert all(isinstance(v, memoryview) for _, v in ours)  # no copy of the data
    assert bytes(ours[0][1][1:]) == values[0][1][1:]  # the DIMSE decoder's slice


@pytest.mark.parametrize("body", [
    _item(1, b"\x03abc")[:-1],             # item longer than the PDU
    _item(1, b"\x03abc") + b"\x00\x00",    # trailing bytes too short for an item
    struct.pack(">LB", 0, 1),              # zero-length item
])
def test_malformed_items_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_p_data(bytearray(body))
