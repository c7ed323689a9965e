"""C-STORE-RSP command sets decoded by hand on the sender's side (`net/fastpath/storersp.py`,
issue 11's send speed): statuses must come out exactly as pydicom decodes them, unusual
responses must fall back to pydicom, and a real pynetdicom SCP (its own process, none of
pacsctl's patches) answering chosen statuses per file must get each file counted as before."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode

from pacsctl.config import Node
from pacsctl.net import scu, sending
from pacsctl.net.fastpath import storersp
from pacsctl.remote import send as remote_send

CT = "1.2.840.10008.5.1.4.1.1.2"


def _rsp(status: int, comment: str | None = None, offending: list[int] | None = None) -> bytes:
    prim = C_STORE()
    prim.MessageIDBeingRespondedTo, prim.Status = 517, status
    prim.AffectedSOPClassUID, prim.AffectedSOPInstanceUID = CT, "1.2.3.44444"
    if comment is not None:
        prim.ErrorComment = comment
    if offending is not None:
        prim.OffendingElement = offending
    msg = C_STORE_RSP()
    msg.primitive_to_message(prim)
    return encode(msg.command_set, True, True)


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xB000, 0xB007, 0xC000, 0xC211, 0x0110])
def test_status_is_read_as_pydicom_reads_it(status: int) -> None:
    for comment in (None, "disk full on the peer"):
        raw = _rsp(status, comment)
        ours, theirs = storersp.decode_store_response(raw), decode(io.BytesIO(raw), True, True)
        assert ours is not None
        for keyword in ("Status", "MessageIDBeingRespondedTo", "CommandField", "CommandDataSetType",
                        "AffectedSOPClassUID", "AffectedSOPInstanceUID", "ErrorComment"):
            assert ours.get(keyword) == theirs.get(keyword), keyword
        assert [e.keyword for e in ours] == [e.keyword for e in theirs]


def test_unusual_responses_are_left_to_pydicom() -> None:
    assert storersp.decode_store_response(_rsp(0xC000, offending=[0x00100010])) is None
    prim = C_ECHO()
    prim.MessageIDBeingRespondedTo, prim.Status = 1, 0
    echo = C_ECHO_RSP()
    echo.primitive_to_message(prim)
    assert storersp.decode_store_response(encode(echo.command_set, True, True)) is None
    raw = _rsp(0xA700)
    assert storersp.decode_store_response(raw[:-1]) is None  # truncated
    assert storersp.decode_store_response(raw + raw[-10:]) is None  # trailing garbage
    status_at = raw.index(b"\x00\x00\x00\x09")  # (0000,0900) Status, then its length
    wrong_length = raw[:status_at + 4] + b"\x04\x00\x00\x00\x00\xa7\x00\x00" + raw[status_at + 10:]
    assert storersp.decode_store_response(wrong_length) is None


# A plain pynetdicom SCP in its own process: the status to answer is the instance number's
# entry in STATUSES (0xC001 goes with an Offending Element, which only pydicom decodes).
_SCP = textwrap.dedent("""
    import sys
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt, AllStoragePresentationContexts
    STATUSES = {1: 0x0000, 2: 0xA700, 3: 0xB000, 4: 0xC000, 5: 0x0000, 6: 0xB007, 7: 0xC001}
    def on_store(event):
        number = int(event.dataset.InstanceNumber)
        rsp = Dataset()
        rsp.Status = STATUSES[number]
        if number == 4:
            rsp.ErrorComment = "refused on purpose"
        if number == 7:
            rsp.OffendingElement = [0x00200013]
        return rsp
    ae = AE(ae_title="STATUSES")
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    print(server.server_address[1], flush=True)
    sys.stdin.read()
    server.shutdown()
""")
EXPECTED = {1: 0x0000, 2: 0xA700, 3: 0xB000, 4: 0xC000, 5: 0x0000, 6: 0xB007, 7: 0xC001}


@pytest.fixture(scope="module")
def status_scp() -> Iterator[Node]:
    proc = subprocess.Popen([sys.executable, "-c", _SCP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield Node(name="s", aet="STATUSES", host="127.0.0.1", port=port)
    proc.communicate("", timeout=30)


@pytest.fixture
def hand_decoded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Statuses of the responses the hand decoder read (a spy: the real decoder runs)."""
    seen: list[int] = []
    original = storersp.decode_store_response

    def spy(raw: Any) -> Any:
        out = original(raw)
        if out is not None:
            seen.append(out.Status)
        return out

    monkeypatch.setattr(storersp, "decode_store_response", spy)
    return seen


def test_each_file_gets_the_status_the_peer_chose(status_scp: Node, hand_decoded: list[int],
                                                   ct_factory) -> None:
    files = ct_factory.series(len(EXPECTED))
    assert all(sending.file_info(f).data_offset is not None for f in files)  # the send fast path
    results = scu.store(status_scp, files, calling_aet="ME")
    assert [r.status for r in results] == list(EXPECTED.values())
    assert [r.ok for r in results] == [True, False, True, False, True, True, False]
    # every response but the one with an Offending Element was read by hand
    assert sorted(hand_decoded) == sorted(s for n, s in EXPECTED.items() if n != 7)


def test_send_counts_warnings_and_failures_per_file(status_scp: Node, ct_factory) -> None:
    files = ct_factory.series(len(EXPECTED))
    items = remote_send.collect_files(files)
    summary = remote_send.send(status_scp, items, calling_aet="ME", associations=2)
    assert (summary.sent, summary.failed, summary.skipped) == (4, 3, 0)
    failed = {Path(f.path).name: f.status for f in summary.failures}
    by_name = {Path(f).name: EXPECTED[n + 1] for n, f in enumerate(files)}
    assert failed == {name: s for name, s in by_name.items() if s in (0xA700, 0xC000, 0xC001)}
    reasons = sorted(f.reason or "" for f in summary.failures)
    assert reasons == [f"refused by the peer (status 0x{s:04X})" for s in (0xA700, 0xC000, 0xC001)]

