"""The send fast path (`net/fastpath/sendstore.py`, issue 11's send speed item): a file sent in
its stored syntax goes as hand-framed P-DATA-TF PDUs written by the sending thread, with a
hand-written command set; everything else, TLS and `PACSCTL_FAST_PATH=0` take pynetdicom's
`send_c_store`. Real associations on loopback to a pacsctl SCP with a small maximum PDU (so
every data set is cut into many fragments)."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset

from pacsctl.config import Node
from pacsctl.net import scu, sending
from pacsctl.net.fastpath import sendstore
from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import ScpHandlers, ScpOptions, StoreRequest
from tests.helpers import TESTDATA_DIR

SMALL_PDU = 4096


class Received:
    """A store handler keeping each data set's bytes as they arrived."""

    def __init__(self) -> None:
        self.datasets: dict[str, bytes] = {}
        self.syntaxes: dict[str, str] = {}

    def __call__(self, req: StoreRequest) -> int:
        self.datasets[req.sop_instance_uid] = req.path.read_bytes()[req.data_offset:]
        self.syntaxes[req.sop_instance_uid] = req.transfer_syntax_uid
        return 0


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[Received, Node]]:
    got = Received()
    (tmp_path / "scp-tmp").mkdir()
    scp: RunningScp = start_scp(ScpHandlers(store=got), ScpOptions(
        ae_title="SMALLPDU", host="127.0.0.1", port=0, maximum_pdu_size=SMALL_PDU,
        temp_dir=tmp_path / "scp-tmp"))
    yield got, Node(name="n", aet="SMALLPDU", host="127.0.0.1", port=scp.port)
    scp.stop(graceful=False)


@pytest.fixture
def stock_sends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SOP Instance UIDs that went through pynetdicom's own `send_c_store`."""
    calls: list[str] = []
    original = Association.send_c_store

    def counting(self: Association, dataset, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls.append(str(getattr(dataset, "SOPInstanceUID", dataset)))
        return original(self, dataset, *args, **kwargs)

    monkeypatch.setattr(Association, "send_c_store", counting)
    return calls


def _data_set(path: Path) -> bytes:
    return path.read_bytes()[split_dataset(path)[1]:]


def test_command_set_is_the_one_pynetdicom_encodes() -> None:
    for originator in (None, ("MOVER", 7)):
        prim = C_STORE()
        prim.MessageID, prim.Priority = 513, 0
        prim.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        prim.AffectedSOPInstanceUID = "1.2.3.44444"  # odd length: padded with NUL
        if originator:
            prim.MoveOriginatorApplicationEntityTitle, prim.MoveOriginatorMessageID = originator
        prim.DataSet = io.BytesIO(b"\x00")
        msg = C_STORE_RQ()
        msg.primitive_to_message(prim)
        ours = sendstore.c_store_rq("1.2.840.10008.5.1.4.1.1.2", "1.2.3.44444", 513,
                                    *(originator or (None, None)))
        assert ours == encode(msg.command_set, True, True)


def test_pdus_fit_the_peer_and_carry_the_message_whole() -> None:
    command, data = b"C" * 10, bytes(range(256)) * 100
    buffers = sendstore.p_data_pdus(3, command, data, 1000)
    stream = b"".join(bytes(b) for b in buffers)
    pos, parts = 0, {0x01: b"", 0x00: b""}
    flags = []
    while pos < len(stream):
        kind, _, length = struct.unpack_from(">BBI", stream, pos)
        assert kind == 0x04 and length <= 1000
        pdv_len, cx, header = struct.unpack_from(">IBB", stream, pos + 6)
        assert cx == 3 and pdv_len == length - 4
        parts[header & 0x01] += stream[pos + 12: pos + 6 + length]
        flags.append(header)
        pos += 6 + length
    assert parts == {0x01: command, 0x00: data}
    assert flags[0] == 0x03 and flags[-1] == 0x02 and set(flags[1:-1]) == {0x00}
    assert len(flags) == 1 + -(-len(data) // 994)


def test_stored_files_go_byte_for_byte_without_send_c_store(
        receiver: tuple[Received, Node], stock_sends: list[str], ct_factory) -> None:
    got, node = receiver
    files = ct_factory.series(3) + [TESTDATA_DIR / n for n in (
        "CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "ExplVR_BigEnd.dcm", "rtplan.dcm")]
    infos = [sending.file_info(f) for f in files]
    assert all(i.data_offset is not None for i in infos)
    results = scu.store(node, files, calling_aet="ME")
    assert all(r.ok for r in results), results
    assert stock_sends == []  # every one on the fast path
    for path, info in zip(files, infos):
        assert got.datasets[info.sop_instance_uid] == _data_set(Path(path)), path
        assert got.syntaxes[info.sop_instance_uid] == info.transfer_syntax_uid


def test_what_it_cannot_send_goes_the_stock_way(
        receiver: tuple[Received, Node], stock_sends: list[str], tmp_path: Path) -> None:
    """A file without File Meta (a bare data set) has no scanned offset: pynetdicom sends it."""
    ds = pydicom.dcmread(TESTDATA_DIR / "CT_small.dcm")
    bare = tmp_path / "bare"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    pydicom.filewriter.dcmwrite(bare, ds, enforce_file_format=False, little_endian=True,
                                implicit_vr=True)
    assert sendstore.file_meta(bare) is None
    got, node = receiver
    [result] = scu.store(node, [bare], calling_aet="ME")
    assert result.ok and stock_sends == [str(ds.SOPInstanceUID)]
    assert str(ds.SOPInstanceUID) in got.datasets


def test_the_switch_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sendstore.usable()
    monkeypatch.setenv("PACSCTL_FAST_PATH", "0")
    assert not sendstore.usable()


def test_file_meta_scan_agrees_with_pydicom() -> None:
    for path in sorted(TESTDATA_DIR.glob("*.dcm"))[:60]:
        try:
            meta, offset = split_dataset(path)
            expected = (str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                        str(meta.TransferSyntaxUID), offset)
        except Exception:
            continue
        raw = sendstore.file_meta(path)
        if raw is not None:
            assert (raw.sop_class_uid, raw.sop_instance_uid, raw.transfer_syntax_uid,
                    raw.data_offset) == expected, path.name


def test_next_file_is_read_while_the_peer_answers(
        receiver: tuple[Received, Node], stock_sends: list[str], ct_factory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file's bytes are read once: the first before it goes, every other one ahead, while
    the peer stores the file before it; what arrives is still each file's own data set."""
    got, node = receiver
    files = ct_factory.series(4)
    reads: list[tuple[str, bool]] = []  # (file, read while a response was awaited)
    original = sendstore._read_data_set

    def counting(path, offset):  # noqa: ANN001
        import inspect

        ahead = any(f.function == "_prefetch" for f in inspect.stack()[1:3])
        reads.append((Path(path).name, ahead))
        return original(path, offset)

    monkeypatch.setattr(sendstore, "_read_data_set", counting)
    results = scu.store(node, files, calling_aet="ME")
    assert all(r.ok for r in results) and stock_sends == []
    assert reads == [(files[0].name, False)] + [(f.name, True) for f in files[1:]]
    for path in files:
        assert got.datasets[sending.file_info(path).sop_instance_uid] == _data_set(path)
