"""Malformed C-STORE-RQ commands (issue 10 item 20): without an Affected SOP Instance UID, or
with one that is not a UID (non-ASCII bytes), on both receive paths (the command whole in one
fragment: served where the PDUs are read; split over fragments: pynetdicom's path). Each is
refused with a status, leaves no temp file, and the association goes on."""

from __future__ import annotations

import struct
import time

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from pacsctl.net import scu
from pacsctl.net.types import STATUS_CANNOT_UNDERSTAND


def _elem(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, tag, len(value)) + value


def _uid(raw: bytes) -> bytes:
    return raw + b"\0" if len(raw) % 2 else raw


def _command(sop_class: bytes | None, sop_instance: bytes | None) -> bytes:
    """A C-STORE-RQ command set (implicit VR little endian) with these raw UID values; None
    leaves the element out."""
    body = b"".join((
        _elem(0x0002, _uid(sop_class)) if sop_class is not None else b"",
        _elem(0x0100, struct.pack("<H", 0x0001)), _elem(0x0110, struct.pack("<H", 7)),
        _elem(0x0700, struct.pack("<H", 0)), _elem(0x0800, struct.pack("<H", 0x0000)),
        _elem(0x1000, _uid(sop_instance)) if sop_instance is not None else b"",
    ))
    return _elem(0x0000, struct.pack("<I", len(body))) + body


def _p_data(context_id: int, control: int, value: bytes) -> bytes:
    item = struct.pack(">LBB", len(value) + 2, context_id, control) + value
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


CASES = {
    "no-instance-uid": lambda cls, inst: (cls, None),
    "non-ascii-instance-uid": lambda cls, inst: (cls, inst + "\u00e9\u00e9".encode("latin-1")),
    "utf8-instance-uid": lambda cls, inst: (cls, "1.2.3.\u00e9".encode("utf-8")),
    "not-a-uid": lambda cls, inst: (cls, b"1.2.x.4"),
    "no-class-uid": lambda cls, inst: (None, inst),
}


@pytest.mark.parametrize("split", [False, True], ids=["whole-command", "split-command"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_store_command_is_refused_and_leaves_nothing(serve, ct_factory, case, split):
    s = serve()
    path = ct_factory()
    ds = pydicom.dcmread(path)
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ds.SOPClassUID, str(ds.file_meta.TransferSyntaxUID))
    ae.dimse_timeout = 15
    assoc = ae.associate("127.0.0.1", s.node.port, ae_title=s.node.aet)
    assert assoc.is_established
    try:
        context_id = assoc.accepted_contexts[0].context_id
        command = _command(*CASES[case](str(ds.SOPClassUID).encode(), str(ds.SOPInstanceUID).encode()))
        _, offset = split_dataset(path)
        data = path.read_bytes()[offset:]
        sock = assoc.dul.socket
        # Pause our reactor as pynetdicom's send_* do, so that the response waits for get_msg
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.001)
        if split:  # the command set in two fragments: pynetdicom decodes it
            sock.send(_p_data(context_id, 0x01, command[:20]))
            sock.send(_p_data(context_id, 0x03, command[20:]))
        else:
            sock.send(_p_data(context_id, 0x03, command))
        sock.send(_p_data(context_id, 0x00, data[: len(data) // 2]))
        sock.send(_p_data(context_id, 0x02, data[len(data) // 2:]))
        _, rsp = assoc.dimse.get_msg(block=True)
        assoc._reactor_checkpoint.set()
        assert rsp is not None, "no response: the association's thread died or it was aborted"
        assert type(rsp).__name__ == "C_STORE"  # the response primitive
        assert (rsp.Status, rsp.MessageIDBeingRespondedTo) == (STATUS_CANNOT_UNDERSTAND, 7)
        # the association goes on: a proper C-STORE on it is stored
        assert assoc.send_c_store(ds).Status == 0
    finally:
        assoc.release()
    assert list(s.archive.files) == [str(ds.SOPInstanceUID)]
    refused = [a for a in s.archive.audit if a["event"] == "store" and a["status"] != 0]
    assert [a["status"] for a in refused] == [STATUS_CANNOT_UNDERSTAND]
    assert "missing or not a UID" in refused[0]["reason"]
    temp = s.scp.options.temp_dir
    deadline = time.monotonic() + 5
    while list(temp.glob(".incoming-*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(temp.glob(".incoming-*")) == []
    assert scu.echo(s.node) >= 0
