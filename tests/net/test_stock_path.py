"""The serving node through pynetdicom's own code (issue 9 §4): the fast path patches private
parts of pynetdicom 3.0; with `ScpOptions.fast_path=False` (or PACSCTL_FAST_PATH=0), or when a
pynetdicom lacks what it patches (warned once), nothing is patched and the same services work:
echo, store, find, move, get, cancel. The tests of test_services run again here with a
`serve` fixture that turns the fast path off."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pydicom
import pytest
from pynetdicom import dimse_messages
from pynetdicom.dsutils import split_dataset
from pynetdicom.dul import DULServiceProvider

from pacsctl.net import fastpath, scu
from pacsctl.net.fastpath import tuning
from tests.net.conftest import Served
from tests.net.test_services import (  # noqa: F401  (collected here, with this module's `serve`)
    test_c_cancel_stops_a_find,
    test_echo,
    test_find_yields_matches,
    test_get_retrieves_every_instance,
    test_move_counts_failures_exactly,
    test_move_to_known_destination,
    test_store_unreadable_file_fails_alone,
)
from tests.net.test_tls_and_hostile import test_garbage_then_echo_still_works  # noqa: F401


@pytest.fixture
def serve(serve: Callable[..., Served]) -> Iterator[Callable[..., Served]]:
    """The `serve` of conftest with the fast path off; back on for the tests after these."""
    def start(*args: Any, **options: Any) -> Served:
        served = serve(*args, fast_path=False, **options)
        assert not fastpath.installed()
        return served

    yield start
    fastpath.install(fastpath.enabled_by_default(), serving=False)


def test_switch_turns_every_patch_off_and_on(serve):
    serve()
    for owner, name in ((DULServiceProvider, "_read_pdu_data"), (DULServiceProvider, "send_pdu"),
                        (dimse_messages, "decode"), (dimse_messages, "write_file_meta_info")):
        assert getattr(owner, name).__module__.startswith(("pynetdicom", "pydicom")), name
    assert fastpath.install(True)
    assert DULServiceProvider.send_pdu is tuning._send_pdu
    assert dimse_messages.decode.__module__ == "pacsctl.net.fastpath.receive"


def test_store_keeps_the_data_set_bytes_as_sent(serve, dicom_test_files):
    """As test_services' store test; pynetdicom's own File Meta has no Source AE Title."""
    s = serve()
    files = [p for p in dicom_test_files if not p.name.startswith("DICOMDIR")][:8]
    results = scu.store(s.node, files)
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)
        req = next(r for r in s.archive.requests if r.sop_instance_uid == uid)
        assert req.path.parent != s.scp.options.temp_dir  # pynetdicom's own temp file
        if not path.name.endswith("deflate.dcm"):
            _, offset = split_dataset(path)
            assert s.archive.files[uid].read_bytes()[req.data_offset:] == path.read_bytes()[offset:]


def test_a_pynetdicom_without_what_is_patched_is_served_stock_and_warned_once(
        monkeypatch, caplog, tmp_path):
    """Another pynetdicom release (simulated: an attribute the fast path replaces is gone):
    one warning, nothing patched, and the node serves through pynetdicom's own code."""
    from pacsctl.config import Node
    from pacsctl.net.scp import start_scp
    from pacsctl.net.types import ScpOptions
    from tests.net.conftest import MemoryArchive

    fastpath.uninstall()
    monkeypatch.delattr(DULServiceProvider, "_read_pdu_data")
    monkeypatch.setattr(fastpath, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="pacsctl.net.fastpath"):
        assert fastpath.install(True) is False
        assert fastpath.install(True) is False
    assert [r.getMessage().count("_read_pdu_data") for r in caplog.records] == [1]
    assert not fastpath.installed()
    monkeypatch.undo()  # the attribute is back: serve with the (then available) switch off
    (tmp_path / "in").mkdir()
    archive = MemoryArchive(tmp_path / "in")
    scp = start_scp(archive.handlers(), ScpOptions(host="127.0.0.1", port=0,
                                                  temp_dir=tmp_path / "tmp", fast_path=False))
    try:
        assert scu.echo(Node("t", "PACSCTL", "127.0.0.1", scp.port)) >= 0
    finally:
        scp.stop(graceful=False)
        fastpath.install(fastpath.enabled_by_default(), serving=False)
