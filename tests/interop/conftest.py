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


# A Lua hook in a destination Orthanc: one line per C-STORE it receives (duplicates included),
# so a test can prove nothing was sent twice.
_COUNT_STORES_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  %s
  local f = io.open("%s", "a")
  f:write(dicom.SOPInstanceUID .. "\\n")
  f:close()
  return true
end
"""


class OrthancPair:
    """Two running Orthancs that know each other: `source` (AET SOURCE) may C-MOVE to `dest`
    (AET DEST); `dest` logs every C-STORE it receives (`stores()`)."""

    def __init__(self, source: OrthancPeer, dest: OrthancPeer, store_log: Path) -> None:
        self.source, self.dest, self.store_log = source, dest, store_log

    def stores(self) -> list[str]:
        """SOP Instance UIDs of every C-STORE `dest` received, in order, duplicates kept."""
        try:
            return self.store_log.read_text().split()
        except FileNotFoundError:
            return []

    @staticmethod
    def spec(peer: OrthancPeer) -> str:
        return f"{peer.aet}@127.0.0.1:{peer.dicom_port}"


def start_orthanc_pair(work: Path, source_config: dict[str, Any] | None = None,
                       store_delay: float = 0.0) -> OrthancPair:
    """Start a DEST Orthanc counting its C-STOREs (taking `store_delay` seconds over each), and
    a SOURCE Orthanc that knows it."""
    binary = require_tool(str(ORTHANC_BIN))
    store_log = work / "dest-stores.log"
    lua = work / "count-stores.lua"
    work.mkdir(parents=True, exist_ok=True)
    delay = f'os.execute("sleep {store_delay:g}")' if store_delay else ""
    lua.write_text(_COUNT_STORES_LUA % (delay, store_log))
    dest = OrthancPeer(work / "dest", aet="DEST", config={"LuaScripts": [str(lua)]}, binary=binary)
    try:
        dest.start()
        source = OrthancPeer(work / "source", aet="SOURCE", binary=binary, config=source_config,
                             modalities={"dest": ["DEST", "127.0.0.1", dest.dicom_port]})
        source.start()
    except PeerError as exc:
        dest.stop()
        pytest.fail(str(exc))
    dest.add_modality("source", "SOURCE", "127.0.0.1", source.dicom_port)
    return OrthancPair(source, dest, store_log)


@pytest.fixture(scope="module")
def orthanc_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPair]:
    """SOURCE and DEST Orthancs shared by a test module (tests use studies of their own)."""
    pair = start_orthanc_pair(tmp_path_factory.mktemp("orthanc-pair"))
    yield pair
    pair.source.stop()
    pair.dest.stop()
