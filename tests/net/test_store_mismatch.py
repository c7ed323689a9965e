"""A C-STORE whose data set is not the instance its command announces (issue 10 item 14): it
was answered Success for the command's UID, stored and indexed under the data set's and
audited under the command's. Now refused with 0xA900, the bytes quarantined with the reason,
nothing stored. Real archive, real associations on loopback, both receive paths."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from pacsctl.archive.archive import Archive
from pacsctl.net.types import STATUS_IDENTIFIER_MISMATCH, STATUS_SUCCESS, ScpOptions
from pacsctl.node.service import RunningNode, serve
from tests.net.test_malformed_store import _command, _p_data


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    archive = Archive.open(tmp_path / "archive")
    running = serve(archive, ScpOptions(ae_title="PACSCTL", host="127.0.0.1", port=0,
                                        temp_dir=archive.tmp_dir))
    yield running
    running.stop(graceful=False, timeout=10)


def _send(port: int, path: Path, sop_class: str, sop_instance: str, split: bool) -> int:
    """Send the data set of `path` under a command announcing these UIDs; the status."""
    ae = AE(ae_title="SCU")
    ae.add_requested_context(sop_class, str(pydicom.dcmread(path).file_meta.TransferSyntaxUID))
    ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCTL")
    assert assoc.is_established
    try:
        cx = assoc.accepted_contexts[0].context_id
        command = _command(sop_class.encode(), sop_instance.encode())
        _, offset = split_dataset(path)
        data = path.read_bytes()[offset:]
        assoc._reactor_checkpoint.clear()  # as pynetdicom's send_* do: the response is ours
        while not assoc._is_paused:
            time.sleep(0.001)
        sock = assoc.dul.socket
        if split:  # pynetdicom's receive path
            sock.send(_p_data(cx, 0x01, command[:20]) + _p_data(cx, 0x03, command[20:]))
        else:
            sock.send(_p_data(cx, 0x03, command))
        sock.send(_p_data(cx, 0x02, data))
        _, rsp = assoc.dimse.get_msg(block=True)
        assoc._reactor_checkpoint.set()
        assert rsp is not None
        return int(rsp.Status)
    finally:
        assoc.release()


def _audit(archive: Archive) -> list[dict]:
    lines = (archive.root / "audit.log").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "store"]


@pytest.mark.parametrize("split", [False, True], ids=["whole-command", "split-command"])
def test_command_uid_other_than_the_data_sets_is_refused_and_quarantined(node, ct_factory, split):
    path = ct_factory()
    stored_uid = str(pydicom.dcmread(path).SOPInstanceUID)
    announced = generate_uid()
    archive = node.service.archive
    assert _send(node.port, path, CTImageStorage, announced, split) == STATUS_IDENTIFIER_MISMATCH
    assert not archive.path_of(Archive.object_relpath(stored_uid)).exists()
    assert not archive.path_of(Archive.object_relpath(announced)).exists()
    assert archive.index.instances() == []
    [held] = archive.quarantined()
    assert stored_uid in held["reason"] and announced in held["reason"]
    assert (archive.root / held["path"]).read_bytes().endswith(path.read_bytes()[split_dataset(path)[1]:])
    [audited] = _audit(archive)
    assert int(str(audited["status"]), 0) == STATUS_IDENTIFIER_MISMATCH  # written as hex
    assert audited["SOPInstanceUID"] == announced and stored_uid in audited["reason"]
    # the same data set under its own UID is stored, and audited as what was stored
    assert _send(node.port, path, CTImageStorage, stored_uid, split) == STATUS_SUCCESS
    assert [r["SOPInstanceUID"] for r in archive.index.instances()] == [stored_uid]
    assert _audit(archive)[-1]["SOPInstanceUID"] == stored_uid


@pytest.mark.parametrize("split", [False, True], ids=["whole-command", "split-command"])
def test_a_ct_command_carrying_an_mr_data_set_is_refused(node, ct_factory, tmp_path, split):
    ds = pydicom.dcmread(ct_factory())
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    mr = tmp_path / "mr.dcm"
    ds.save_as(mr, enforce_file_format=True)
    archive = node.service.archive
    assert _send(node.port, mr, CTImageStorage, str(ds.SOPInstanceUID), split) == STATUS_IDENTIFIER_MISMATCH
    assert archive.index.instances() == []
    [held] = archive.quarantined()
    assert MRImageStorage in held["reason"] and CTImageStorage in held["reason"]
