"""Echo, store, find, move and get through `pacsctl.net` on real loopback associations."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, _config, evt
from pynetdicom.dsutils import split_dataset

from pacsctl.config import Node
from pacsctl.errors import NetworkError
from pacsctl.net import sending, scu
from pacsctl.net.types import Destination, StoreRequest
from tests.helpers import TESTDATA_DIR, free_port

COMPRESSED = ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm", "MR_small_jpeg_ls_lossless.dcm"]


def _dataset_bytes(path: Path) -> bytes:
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def _ident(**kw: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.SOPInstanceUID = ""
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _eventually(check, timeout: float = 5.0) -> None:
    """The server audits a release after the client saw it: give it a moment."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_echo(serve):
    s = serve()
    assert scu.echo(s.node) >= 0
    _eventually(lambda: [a["event"] for a in s.archive.audit] == ["associate", "release"])


def test_echo_unreachable_is_network_error():
    with pytest.raises(NetworkError):
        scu.echo(Node("x", "NOBODY", "127.0.0.1", free_port()), timeout=3)


def test_store_keeps_bytes_as_sent(serve, dicom_test_files):
    """Every transfer syntax pydicom's files use arrives byte for byte, streamed to a file."""
    s = serve()
    results = scu.store(s.node, dicom_test_files)
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert len(s.archive.files) == len(dicom_test_files)
    for path in dicom_test_files:
        # Sent from file, so the C-STORE carries the File Meta's UID (a few test files
        # disagree with their own data set on it).
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta
                  .MediaStorageSOPInstanceUID)
        assert uid in s.archive.files, path.name
        received = s.archive.files[uid]
        req = next(r for r in s.archive.requests if r.sop_instance_uid == uid)
        if sending._odd_deflated(sending.file_info(path)):
            # Re-encoded by the sender (an odd deflated stream must be padded): the same data
            # set arrives, stored as sent, but not the file's bytes.
            assert pydicom.dcmread(received) == pydicom.dcmread(path), path.name
            continue
        assert received.read_bytes()[req.data_offset:] == _dataset_bytes(path), path.name
        assert req.file_meta.TransferSyntaxUID == req.transfer_syntax_uid
        # The File Meta group says which node sent the file.
        meta = pydicom.dcmread(received, stop_before_pixels=True).file_meta
        assert meta.SourceApplicationEntityTitle == req.assoc.calling_aet != ""
    # The temp files were renamed away: nothing left behind in the temp dir.
    assert not list((s.archive.root.parent / "tmp").iterdir())
    stores = [a for a in s.archive.audit if a["event"] == "store"]
    assert len(stores) == len(dicom_test_files) and all(a["status"] == 0 for a in stores)


def test_store_decompresses_when_peer_refuses_compressed(monkeypatch):
    """A plain receiver accepting only uncompressed syntaxes still gets the images."""
    # pacsctl.net switches pynetdicom to accept-anything for its listener; this peer must not.
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)
    got: dict[str, str] = {}

    def on_store(event):
        got[str(event.request.AffectedSOPInstanceUID)] = str(event.context.transfer_syntax)
        return 0

    ae = AE(ae_title="PLAIN")
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian,
                                                      ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        node = Node("p", "PLAIN", "127.0.0.1", server.server_address[1])
        files = [TESTDATA_DIR / n for n in COMPRESSED]
        results = scu.store(node, files, decompress=sending.Decompress.LOSSY)  # JPEG 2000 (lossy or not) among them
        assert all(r.ok for r in results), results
        assert {r.transfer_syntax_uid for r in results} <= {ExplicitVRLittleEndian,
                                                            ImplicitVRLittleEndian}
        # Same instances (decompressing must not mint new SOP Instance UIDs).
        assert set(got) == {r.sop_instance_uid for r in results}
    finally:
        server.shutdown()


def test_store_unreadable_file_fails_alone(serve, tmp_path):
    s = serve()
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    results = scu.store(s.node, [junk, TESTDATA_DIR / "CT_small.dcm"])
    assert [r.ok for r in results] == [False, True]


def test_find_yields_matches(serve):
    s = serve()
    scu.store(s.node, [TESTDATA_DIR / "CT_small.dcm", TESTDATA_DIR / "MR_small.dcm"])
    found = list(scu.find(s.node, _ident()))
    assert len(found) == 2
    assert {str(d.SOPInstanceUID) for d in found} == set(s.archive.files)
    _eventually(lambda: any(a["event"] == "find" and a["matches"] == 2
                            for a in s.archive.audit))


def test_get_retrieves_every_instance(serve, tmp_path):
    s = serve()
    files = [TESTDATA_DIR / "CT_small.dcm", TESTDATA_DIR / "JPEG2000.dcm"]
    scu.store(s.node, files)
    received: list[StoreRequest] = []

    def keep(req: StoreRequest) -> int:
        received.append(req)
        return 0

    counts = scu.get(s.node, _ident(), keep)
    assert (counts.status, counts.completed, counts.failed, len(received)) == (0, 2, 0, 2)
    assert {r.sop_instance_uid for r in received} == set(s.archive.files)


def test_move_to_known_destination(serve):
    source, dest = serve(), serve(aet="DEST")
    source.archive.destinations["DEST"] = Destination("127.0.0.1", dest.scp.port)
    files = [TESTDATA_DIR / n for n in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm")]
    scu.store(source.node, files)
    counts = scu.move(source.node, "DEST", _ident())
    assert (counts.status, counts.completed, counts.failed, counts.remaining) == (0, 3, 0, 0)
    # Count what arrived, not only what the final status claims.
    assert set(dest.archive.files) == set(source.archive.files)
    for uid, path in source.archive.files.items():
        assert pydicom.dcmread(dest.archive.files[uid]).PixelData == pydicom.dcmread(
            path).PixelData
    move = next(a for a in source.archive.audit if a["event"] == "move")
    assert move["completed"] == 3 and move["status"] == 0


def test_move_to_unknown_destination_is_a801(serve):
    s = serve()
    scu.store(s.node, [TESTDATA_DIR / "CT_small.dcm"])
    counts = scu.move(s.node, "NOWHERE", _ident())
    assert counts.status == 0xA801


def test_move_counts_failures_exactly(serve):
    """One instance vanishes from disk between locate and send: 1 failed, 1 completed."""
    source, dest = serve(), serve(aet="DEST")
    source.archive.destinations["DEST"] = Destination("127.0.0.1", dest.scp.port)
    scu.store(source.node, [TESTDATA_DIR / "CT_small.dcm", TESTDATA_DIR / "MR_small.dcm"])
    first = sorted(source.archive.files)[0]
    source.archive.files[first].write_bytes(b"gone bad")
    counts = scu.move(source.node, "DEST", _ident())
    assert (counts.completed, counts.failed) == (1, 1)
    assert counts.status == 0xB000
    assert len(dest.archive.files) == 1


def test_allow_list_rejects_unknown_calling_aet(serve):
    s = serve(allow=["GOODAE"])
    with pytest.raises(NetworkError, match="rejected"):
        scu.echo(s.node, calling_aet="BADAE")
    assert scu.echo(s.node, calling_aet="GOODAE") >= 0
    reject = next(a for a in s.archive.audit if a["event"] == "reject")
    assert reject["calling_aet"] == "BADAE" and "allowed" in reject["reason"]


def test_wrong_called_aet_rejected(serve):
    s = serve()
    with pytest.raises(NetworkError):
        scu.echo(Node("x", "OTHER", "127.0.0.1", s.scp.port))


def test_graceful_stop_closes_listener(serve):
    s = serve()
    assert scu.echo(s.node) >= 0
    assert s.scp.stop(graceful=True, timeout=5)
    with pytest.raises(NetworkError):
        scu.echo(s.node, timeout=3)


def test_c_cancel_stops_a_find(serve):
    """C-CANCEL during a long C-FIND: the node stops and answers Cancel (0xFE00)."""
    from pynetdicom.presentation import build_context
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    s = serve()

    def slow_find(model, identifier, ctx):
        for i in range(200):
            time.sleep(0.01)
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.SOPInstanceUID = f"1.2.3.{i}"
            yield ds

    # Swap the listener's find callable for a slow one (its dispatcher is bound to the server).
    on_find, _args = s.scp.server._handlers[evt.EVT_C_FIND]
    on_find.__self__.h.find = slow_find
    statuses, pending = [], 0
    with scu.associate(s.node, [build_context(FIND)]) as assoc:
        cx_id = assoc.accepted_contexts[0].context_id
        for status, ds in assoc.send_c_find(_ident(), FIND, msg_id=1):
            code = status.Status
            statuses.append(code)
            if code == 0xFF00:
                pending += 1
                if pending == 3:
                    assoc.send_c_cancel(1, cx_id)
    assert statuses[-1] == 0xFE00
    assert pending < 200
