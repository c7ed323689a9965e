"""Fixtures starting real peers for the interop suite: Orthanc and DCMTK storescp.

A missing peer binary fails the test when CI is set and skips it elsewhere. Every test in this
folder is marked `interop` automatically. The processes are
`benchmarks.peers` classes, so benchmarks and tests drive the very same set-up.

    def test_x(orthanc):               # a running Orthanc (AET ORTHANC), empty
        orthanc.dicom_port, orthanc.http_port, orthanc.rest("/system"), orthanc.instance_count()

    def test_y(orthanc_factory, free_port):
        peer = orthanc_factory(modalities={"PACSCTL": ["PACSCTL", "127.0.0.1", free_port]})

    def test_z(storescp_factory):
        scp = storescp_factory(aet="DEST")      # scp.port, scp.dir, scp.aet, scp.files()
        port, out_dir = scp
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.peers import ORTHANC_BIN, OrthancPeer, PeerError, StoreSCPPeer
from tests.helpers import require_tool


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/interop as `interop` (so ``-m "not interop"`` skips them)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.interop)


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., OrthancPeer]]:
    """Start real Orthancs: ``orthanc_factory(aet="ORTHANC", modalities={...}, config={...})``.

    `modalities` maps a name to ``[AET, host, port]``; `config` overrides configuration keys.
    Each has its own temp storage and is stopped at teardown.
    """
    binary = require_tool(str(ORTHANC_BIN))
    started: list[OrthancPeer] = []

    def start(aet: str = "ORTHANC", modalities: dict[str, Any] | None = None,
              config: dict[str, Any] | None = None) -> OrthancPeer:
        work = tmp_path / f"orthanc{len(started)}"
        peer = OrthancPeer(work, aet=aet, modalities=modalities, config=config, binary=binary)
        started.append(peer)
        try:
            return peer.start()
        except PeerError as exc:
            pytest.fail(str(exc))

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., OrthancPeer]) -> OrthancPeer:
    """A running, empty Orthanc with AET ORTHANC and no modalities (add with add_modality)."""
    return orthanc_factory()


@pytest.fixture
def storescp_factory(tmp_path: Path) -> Iterator[Callable[..., StoreSCPPeer]]:
    """Start DCMTK storescp: ``storescp_factory(aet="STORESCP", accept_all=True, extra_args=())``.

    Returns a `StoreSCPPeer` (``.port``, ``.dir``, ``.aet``, ``.files()``; unpacks as
    ``port, out_dir``). Files land in ``tmp_path/storescp-<aet>-<n>``. Stopped at teardown.
    """
    binary = require_tool("/usr/bin/storescp")
    started: list[StoreSCPPeer] = []

    def start(aet: str = "STORESCP", accept_all: bool = True,
              extra_args: tuple[str, ...] | list[str] = ()) -> StoreSCPPeer:
        out_dir = tmp_path / f"storescp-{aet}-{len(started)}"
        peer = StoreSCPPeer(out_dir, aet=aet, accept_all=accept_all, extra_args=extra_args,
                            binary=binary)
        started.append(peer)
        try:
            return peer.start()
        except PeerError as exc:
            pytest.fail(str(exc))

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def storescp(storescp_factory: Callable[..., StoreSCPPeer]) -> StoreSCPPeer:
    """A running DCMTK storescp with AET STORESCP accepting every transfer syntax."""
    return storescp_factory()
