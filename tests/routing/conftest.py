"""A real pynetdicom Storage SCP on loopback for the routing tests: it records what arrives
and answers the status the test sets (to play a destination that refuses)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from tests.helpers import free_port


@dataclass
class StoreSink:
    """What a destination received: SOP Instance UIDs in arrival order (duplicates kept)."""

    port: int
    aet: str
    status: int = 0x0000  # answered to every C-STORE
    received: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    datasets: list = field(default_factory=list)  # what arrived, decoded
    server: ThreadedAssociationServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def spec(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def handle(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            if self.status == 0x0000:
                self.received.append(uid)
                self.datasets.append(event.dataset)
            else:
                self.refused.append(uid)
            return self.status

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def start(self) -> StoreSink:
        ae = AE(ae_title=self.aet)
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self.handle)])
        return self


@pytest.fixture
def sink() -> Iterator[StoreSink]:
    """A running Storage SCP (AET SINK) on a free loopback port."""
    peer = StoreSink(free_port(), "SINK").start()
    yield peer
    peer.stop()


@pytest.fixture
def stopped_sink() -> Iterator[StoreSink]:
    """A Storage SCP's address with nothing listening yet (`.start()` brings it up)."""
    peer = StoreSink(free_port(), "SINK")
    yield peer
    peer.stop()
