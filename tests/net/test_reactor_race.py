"""pynetdicom's requestor reactor and a send_*() call race for the response (seen as a C-STORE
of `scu.store` timing out after 30 s, then "association lost", on a loaded machine).

send_c_store() pauses the reactor by clearing its checkpoint and waiting until the reactor
says it is paused; but the reactor says so *before* it looks at the checkpoint. When it has
just passed the checkpoint, the sender sees "paused", sends, and the reactor, once it runs
again, takes the response off the queue, logs "Received unexpected C-STORE service message"
and drops it. Here the reactor is held right after passing its checkpoint (what a loaded
machine does to a thread waiting for the GIL), and the sender after it sent its request: the
race happens every time."""

from __future__ import annotations

import threading
import time

import pydicom
from pynetdicom import AE

from pacsctl.net import fastpath


class _SlowCheckpoint(threading.Event):
    """The reactor's checkpoint; the reactor is held for a while after passing it once armed."""

    def __init__(self, reactor: threading.Thread | None = None) -> None:
        super().__init__()
        self.set()
        self.reactor = reactor
        self.armed = threading.Event()
        self.passed = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        result = super().wait(timeout)
        if threading.current_thread() is self.reactor and self.armed.is_set():
            self.armed.clear()
            self.passed.set()
            time.sleep(0.5)  # descheduled between the checkpoint and its get_msg()
        return result


def test_a_response_taken_by_the_reactor_reaches_the_waiting_sender(serve, ct_factory):
    fastpath.install(True, serving=False)
    s = serve()
    ds = pydicom.dcmread(ct_factory())
    ae = AE(ae_title="SCU")
    ae.add_requested_context(ds.SOPClassUID, str(ds.file_meta.TransferSyntaxUID))
    ae.dimse_timeout = 10
    assoc = ae.associate("127.0.0.1", s.node.port, ae_title=s.node.aet)
    assert assoc.is_established
    try:
        checkpoint = _SlowCheckpoint(assoc)
        assoc._reactor_checkpoint = checkpoint
        get_msg = assoc.dimse.get_msg

        def late_get_msg(block: bool = False):  # the sender is descheduled too, after sending
            if threading.current_thread() is not assoc and block:
                time.sleep(1.0)
            return get_msg(block)

        assoc.dimse.get_msg = late_get_msg
        checkpoint.armed.set()
        assert checkpoint.passed.wait(5)  # the reactor is now between checkpoint and get_msg
        started = time.monotonic()
        rsp = assoc.send_c_store(ds)
        assert rsp is not None and getattr(rsp, "Status", None) == 0
        assert time.monotonic() - started < 8  # answered, not the DIMSE timeout
    finally:
        assoc.release()
