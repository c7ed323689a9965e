"""A real pynetdicom listener over a small in-memory "archive", for the `pacsctl.net` tests.

The handlers are deliberately simple (dict of UID -> file) so the tests exercise the network
layer, not the archive: real sockets on 127.0.0.1, real pynetdicom associations.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from pacsctl.config import Node
from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import (
    Destination,
    QueryContext,
    QueryModel,
    ScpHandlers,
    ScpOptions,
    StoreRequest,
    TlsOptions,
)


@dataclass
class MemoryArchive:
    """Stores what arrives as files named by SOP Instance UID; answers FIND at IMAGE level
    with SOPInstanceUID (and StudyInstanceUID) matching, and LOCATE with the same rule."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    audit: list[dict[str, Any]] = field(default_factory=list)
    destinations: dict[str, Destination] = field(default_factory=dict)
    requests: list[StoreRequest] = field(default_factory=list)

    def store(self, req: StoreRequest) -> int:
        dst = self.root / req.sop_instance_uid
        os.replace(req.path, dst)  # temp dir is on the same file system: a rename
        self.files[req.sop_instance_uid] = dst
        self.requests.append(req)
        return 0x0000

    def _matches(self, identifier: Dataset) -> list[str]:
        wanted = identifier.get("SOPInstanceUID") or identifier.get("StudyInstanceUID") or ""
        uids = [str(u) for u in wanted] if isinstance(wanted, pydicom.multival.MultiValue) else (
            [str(wanted)] if wanted else [])
        out = []
        for uid, path in sorted(self.files.items()):
            if not uids:
                out.append(uid)
                continue
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if uid in uids or str(ds.get("StudyInstanceUID", "")) in uids:
                out.append(uid)
        return out

    def find(self, model: QueryModel, identifier: Dataset, ctx: QueryContext
             ) -> Iterator[Dataset]:
        for uid in self._matches(identifier):
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.SOPInstanceUID = uid
            yield ds

    def locate(self, model: QueryModel, identifier: Dataset, ctx: QueryContext) -> list[str]:
        return [str(self.files[u]) for u in self._matches(identifier)]

    def handlers(self) -> ScpHandlers:
        return ScpHandlers(store=self.store, find=self.find, locate=self.locate,
                           destination=self.destinations.get, audit=self.audit.append)


@dataclass
class Served:
    """A running listener, its in-memory archive, and a Node pointing at it."""

    scp: RunningScp
    archive: MemoryArchive
    node: Node


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start listeners: ``serve(aet="PACSCTL", **ScpOptions fields)``; stopped at teardown."""
    running: list[RunningScp] = []

    def start(aet: str = "PACSCTL", **options: Any) -> Served:
        root = tmp_path / f"scp{len(running)}"
        (root / "in").mkdir(parents=True)
        archive = MemoryArchive(root / "in")
        opts = ScpOptions(ae_title=aet, host="127.0.0.1", port=0, temp_dir=root / "tmp",
                          **options)
        scp = start_scp(archive.handlers(), opts)
        running.append(scp)
        tls = opts.tls is not None
        return Served(scp, archive, Node("t", aet, "127.0.0.1", scp.port, tls=tls))

    yield start
    for scp in running:
        scp.stop(graceful=False)


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway CA, a server and a client certificate made with the openssl CLI."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    for name in ("server", "client", "rogue", "elsewhere"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
    # The server's certificate names the loopback host (clients check it); "elsewhere" is
    # signed by the same CA for another host name.
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "elsewhere.ext").write_text("subjectAltName=DNS:elsewhere.example\n")
    for name in ("server", "client", "elsewhere"):
        ext = ["-extfile", f"{name}.ext"] if name != "client" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *ext)
    # A client certificate not signed by the CA.
    run("x509", "-req", "-in", "rogue.csr", "-signkey", "rogue.key", "-days", "2",
        "-out", "rogue.pem")
    return {k: str(d / v) for k, v in {
        "ca": "ca.pem", "server_cert": "server.pem", "server_key": "server.key",
        "client_cert": "client.pem", "client_key": "client.key",
        "rogue_cert": "rogue.pem", "rogue_key": "rogue.key",
        "elsewhere_cert": "elsewhere.pem", "elsewhere_key": "elsewhere.key"}.items()}


def server_tls(material: dict[str, str], require_client: bool = True) -> TlsOptions:
    """TlsOptions for a test listener."""
    return TlsOptions(cert=material["server_cert"], key=material["server_key"],
                      ca=material["ca"] if require_client else None)
