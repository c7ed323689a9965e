"""`get` and `move` into the archive decide duplicates and conflicts as `import` does, and a
conflict ends them with exit 3 as it ends an import (it used to be a log line and exit 0; a
C-MOVE received by `serve` called the conflicting copy "already archived")."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from pacsctl.archive.archive import Archive
from pacsctl.config import Node
from pacsctl.node.service import RunningNode, serve
from pacsctl.net.types import ScpOptions
from tests.helpers import free_port, run_cli


def _summary(proc: Any) -> dict[str, Any]:
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., tuple[Archive, RunningNode]]]:
    """Start in-process nodes: ``served(archive_dir, aet, files)`` -> (archive, node)."""
    nodes: list[RunningNode] = []

    def start(root: Path, aet: str, files: list[Path] = (), port: int = 0) -> tuple[Archive, RunningNode]:
        archive = Archive.open(root)
        archive.ingest([(f.read_bytes(), str(f)) for f in files])
        node = serve(archive, ScpOptions(ae_title=aet, host="127.0.0.1", port=port, temp_dir=archive.tmp_dir))
        nodes.append(node)
        return archive, node

    yield start
    for node in nodes:
        node.stop(graceful=True, timeout=10)


def _copies(ct_factory, tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """Ours: X and Y. The peer's: X with other pixels (a conflict), Y behind another writer's
    File Meta (a duplicate)."""
    x = ct_factory(patient_id="P1", study_uid="1.2.3.4", series_uid="1.2.3.4.1", pixel_seed=1)
    y = ct_factory(patient_id="P1", study_uid="1.2.3.4", series_uid="1.2.3.4.1", pixel_seed=2)
    x_uid = pydicom.dcmread(x).SOPInstanceUID
    other = tmp_path / "peer-files"
    x2 = ct_factory("x2.dcm", directory=other, patient_id="P1", study_uid="1.2.3.4", series_uid="1.2.3.4.1",
                    sop_uid=x_uid, pixel_seed=3)
    ds = pydicom.dcmread(y)
    ds.file_meta.ImplementationClassUID = "1.2.3.4.5.6.7"
    ds.file_meta.SourceApplicationEntityTitle = "OTHERPACS"
    y2 = other / "y2.dcm"
    ds.save_as(y2, enforce_file_format=True)
    return [x, y], [x2, y2]


def test_get_reports_a_conflict_like_import_and_exits_3(served, ct_factory, tmp_path: Path, archive_dir: Path) -> None:
    ours, theirs = _copies(ct_factory, tmp_path)
    with Archive.open(archive_dir) as archive:
        archive.ingest([(p.read_bytes(), str(p)) for p in ours])
    _peer, node = served(tmp_path / "peer", "PEER", theirs)
    proc = run_cli("get", f"PEER@127.0.0.1:{node.port}", "-k", "StudyInstanceUID=1.2.3.4", "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["received"], summary["stored"], summary["duplicates"], summary["conflicts"]) == (2, 0, 1, 1)
    assert "conflict: same SOP Instance UID, different bytes in the data set" in proc.stderr
    assert [p.read_bytes() for p in ours] == [(archive_dir / Archive.object_relpath(pydicom.dcmread(p).SOPInstanceUID)).read_bytes()
                                             for p in ours]  # the archived copies stay


def test_move_received_by_serve_counts_a_conflict_not_as_already_archived(served, ct_factory, tmp_path: Path,
                                                                         archive_dir: Path) -> None:
    ours, theirs = _copies(ct_factory, tmp_path)
    port = free_port()
    local, _node = served(archive_dir, "LOCAL", ours, port=port)
    local.config.ae_title, local.config.host, local.config.port = "LOCAL", "127.0.0.1", port
    local.save_config()
    peer, peer_node = served(tmp_path / "peer", "PEER", theirs)
    peer.config.nodes["local"] = Node("local", "LOCAL", "127.0.0.1", port)
    peer.save_config()
    proc = run_cli("move", f"PEER@127.0.0.1:{peer_node.port}", "--to", "LOCAL", "-k", "StudyInstanceUID=1.2.3.4",
                   "--json", "--settle", "2")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["conflicts"], summary["already_archived"], summary["stored"]) == (1, 1, 0), summary
