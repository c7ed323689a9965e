"""C-STOREs served in the DUL thread (faststore) and by pynetdicom store the same bytes; a data
set cut off by an abort leaves no temp file."""

from __future__ import annotations

import struct
import time

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from pacsctl.net import scu
from pacsctl.net.fastpath import faststore
from pacsctl.net.fastpath.receive import decode_store_command


@pytest.mark.parametrize("pdu_size, in_dul_thread", [(1 << 20, True), (128, False)])
def test_both_paths_store_the_bytes_as_sent(serve, dicom_test_files, monkeypatch, pdu_size, in_dul_thread):
    """A command set that arrives whole is served where the PDUs are read; with a 128-byte PDU
    limit it is split over PDUs and pynetdicom serves it. The stored data sets are identical."""
    served: list[str] = []
    finish = faststore._finish

    def counting(dul, incoming):
        served.append(incoming.sop_instance)
        finish(dul, incoming)

    monkeypatch.setattr(faststore, "_finish", counting)
    files = [p for p in dicom_test_files if not p.name.startswith("DICOMDIR")][:6]
    s = serve(maximum_pdu_size=pdu_size)
    results = scu.store(s.node, files)
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert len(served) == (len(files) if in_dul_thread else 0)
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)
        req = next(r for r in s.archive.requests if r.sop_instance_uid == uid)
        _, offset = split_dataset(path)
        if not path.name.endswith("deflate.dcm"):
            assert s.archive.files[uid].read_bytes()[req.data_offset:] == path.read_bytes()[offset:]
        assert req.file_meta.TransferSyntaxUID == req.transfer_syntax_uid


def _p_data(context_id: int, control: int, value: bytes) -> bytes:
    item = struct.pack(">LBB", len(value) + 2, context_id, control) + value
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def test_abort_in_the_middle_of_a_data_set_leaves_no_temp_file(serve, ct_factory):
    """The sender aborts after the command and part of the data set: nothing stored, nothing
    left in the temp folder, and the node goes on serving."""
    s = serve()
    path = ct_factory()
    ds = pydicom.dcmread(path)
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ds.SOPClassUID, str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", s.node.port, ae_title=s.node.aet)
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    command = _c_store_rq(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    assert decode_store_command(command) is not None  # the node's fast path takes this one
    _, offset = split_dataset(path)
    data = path.read_bytes()[offset:]
    assoc.dul.socket.send(_p_data(context_id, 0x03, command))
    assoc.dul.socket.send(_p_data(context_id, 0x00, data[: len(data) // 2]))
    temp = s.scp.options.temp_dir
    _wait(lambda: list(temp.glob(".incoming-*")) != [])  # the data set is arriving
    assoc.abort()
    _wait(lambda: list(temp.glob(".incoming-*")) == [])
    assert list(temp.glob(".incoming-*")) == []
    assert s.archive.files == {}
    assert all(r.ok for r in scu.store(s.node, [path]))


def test_a_command_before_the_data_set_ended_drops_it_and_is_served(serve, ct_factory):
    """A peer that sends a new command (C-ECHO) in the middle of a C-STORE's data set: the
    partial data set is dropped with its temp file, the echo is answered, nothing is stored."""
    s = serve()
    path = ct_factory()
    ds = pydicom.dcmread(path)
    ae = AE(ae_title="SCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context(ds.SOPClassUID, str(ds.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", s.node.port, ae_title=s.node.aet)
    assert assoc.is_established
    try:
        storage = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == ds.SOPClassUID)
        _, offset = split_dataset(path)
        data = path.read_bytes()[offset:]
        assoc.dul.socket.send(_p_data(storage.context_id, 0x03,
                                      _c_store_rq(str(ds.SOPClassUID), str(ds.SOPInstanceUID))))
        assoc.dul.socket.send(_p_data(storage.context_id, 0x00, data[: len(data) // 2]))
        temp = s.scp.options.temp_dir
        _wait(lambda: list(temp.glob(".incoming-*")) != [])
        assert assoc.send_c_echo().Status == 0
        assert list(temp.glob(".incoming-*")) == []
    finally:
        assoc.release()
    assert s.archive.files == {}


def _wait(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _c_store_rq(sop_class: str, sop_instance: str) -> bytes:
    """A C-STORE-RQ command set (implicit VR little endian)."""
    def elem(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0, tag, len(value)) + value

    def uid(text: str) -> bytes:
        raw = text.encode()
        return raw + b"\0" if len(raw) % 2 else raw

    body = b"".join((
        elem(0x0002, uid(sop_class)), elem(0x0100, struct.pack("<H", 0x0001)),
        elem(0x0110, struct.pack("<H", 7)), elem(0x0700, struct.pack("<H", 0)),
        elem(0x0800, struct.pack("<H", 0x0000)), elem(0x1000, uid(sop_instance)),
    ))
    return elem(0x0000, struct.pack("<I", len(body))) + body


def test_stores_echoes_and_finds_interleave_on_one_association(serve, ct_factory, monkeypatch):
    """C-STOREs served in the DUL thread and messages pynetdicom serves (C-ECHO, C-FIND) take
    turns on one association; each gets its own answer, and the release still works."""
    served: list[str] = []
    finish = faststore._finish
    monkeypatch.setattr(faststore, "_finish", lambda dul, inc: (served.append(inc.sop_instance), finish(dul, inc))[1])
    s = serve()
    paths = [ct_factory(sop_uid=f"1.2.3.9.{i}") for i in range(3)]
    ae = AE(ae_title="SCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.2.1.1")  # Patient Root FIND
    ae.add_requested_context(pydicom.dcmread(paths[0]).SOPClassUID, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", s.node.port, ae_title=s.node.aet)
    assert assoc.is_established
    try:
        for path in paths:
            assert assoc.send_c_store(pydicom.dcmread(path)).Status == 0
            assert assoc.send_c_echo().Status == 0
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.SOPInstanceUID = ""
        found = [ds for status, ds in assoc.send_c_find(query, "1.2.840.10008.5.1.4.1.2.1.1")
                 if status and status.Status in (0xFF00, 0xFF01)]
        assert sorted(str(ds.SOPInstanceUID) for ds in found) == sorted(served)
    finally:
        assoc.release()
    assert not assoc.is_established and assoc.is_released
    assert served == ["1.2.3.9.0", "1.2.3.9.1", "1.2.3.9.2"]
