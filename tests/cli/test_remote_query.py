"""`pacsctl query` completed (issue 11): `-k Keyword` asks for a return key and shows it,
`--limit N` stops the C-FIND after N matches (C-CANCEL, then a release), a study-level
`-k Modality=CT` goes out as ModalitiesInStudy with a note; and pacsctl's own C-FIND server
matches a study-level Modality against ModalitiesInStudy, as `ls` does.

Peers: a pynetdicom SCP whose find handler records the identifiers it is asked (real
associations on loopback), and a pacsctl node over its own archive (`peer_factory`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from pacsctl.config import Node
from pacsctl.net import scu
from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import QueryContext, ScpHandlers, ScpOptions
from pacsctl.remote.find import build_identifier
from tests.cli.test_remote import Peer, peer_factory  # noqa: F401  (fixture)
from tests.helpers import invoke_cli

MATCHES = 200


class RecordingFind:
    """A C-FIND SCP answering MATCHES studies slowly, recording what it was asked and how far
    it got before a C-CANCEL."""

    def __init__(self) -> None:
        self.identifiers: list[Dataset] = []
        self.answered: list[int] = []
        self.audit: list[dict[str, Any]] = []
        self.delay = 0.0  # seconds between matches

    def find(self, model: str, identifier: Dataset, ctx: QueryContext) -> Iterator[Dataset]:
        self.identifiers.append(identifier)
        sent = 0
        try:
            for n in range(MATCHES):
                if ctx.is_cancelled():
                    return
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                ds.StudyInstanceUID = f"1.2.3.{n}"
                ds.PatientID = f"P{n}"
                ds.AccessionNumber = f"ACC{n}"
                ds.StudyID = f"ID{n}"
                ds.ModalitiesInStudy = "CT"
                sent += 1
                yield ds
                time.sleep(self.delay)
        finally:
            self.answered.append(sent)


@pytest.fixture
def recording() -> Iterator[tuple[RecordingFind, RunningScp]]:
    peer = RecordingFind()
    scp = start_scp(ScpHandlers(find=peer.find, audit=peer.audit.append),
                    ScpOptions(ae_title="FINDSCP", host="127.0.0.1", port=0))
    yield peer, scp
    scp.stop(graceful=False)


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_bare_keyword_is_a_return_key_and_shown(recording: tuple[RecordingFind, RunningScp],
                                                archive_dir: Path) -> None:
    peer, scp = recording
    spec = f"FINDSCP@127.0.0.1:{scp.port}"
    proc = invoke_cli("query", spec, "-k", "accessionnumber", "-k", "PatientID=P1*", "--json")
    assert proc.returncode == 0, proc.stderr
    asked = peer.identifiers[-1]
    assert "AccessionNumber" in asked and asked.AccessionNumber == "" and asked.PatientID == "P1*"
    records = _lines(proc.stdout)
    assert records and all(r["AccessionNumber"] == f"ACC{r['PatientID'][1:]}" for r in records)
    table = invoke_cli("query", spec, "-k", "StudyID", "-k", "PatientID=P7")
    header = table.stdout.splitlines()[0].split("\t")
    assert table.returncode == 0 and header[-1] == "StudyID", table.stdout
    assert table.stdout.splitlines()[1].endswith("\tID7")
    assert "StudyID" not in invoke_cli("query", spec, "-k", "PatientID=P7").stdout


def test_limit_cancels_the_find_and_releases(recording: tuple[RecordingFind, RunningScp],
                                             archive_dir: Path) -> None:
    peer, scp = recording
    peer.delay = 0.02  # 4 s for every match: a C-CANCEL comes long before
    proc = invoke_cli("query", f"FINDSCP@127.0.0.1:{scp.port}", "--limit", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(_lines(proc.stdout)) == 3
    assert "it holds more (--limit)" in proc.stderr
    deadline = time.monotonic() + 20
    while not peer.answered and time.monotonic() < deadline:
        time.sleep(0.05)
    assert peer.answered and peer.answered[0] < MATCHES  # cancelled, not drained to the end
    while time.monotonic() < deadline and not any(r["event"] in ("release", "abort") for r in peer.audit):
        time.sleep(0.05)
    assert [r["event"] for r in peer.audit if r["event"] in ("release", "abort")] == ["release"]
    peer.delay = 0.0
    sorted_ = invoke_cli("query", f"FINDSCP@127.0.0.1:{scp.port}", "--limit", "2", "--sort=-PatientID",
                         "--json")
    assert [r["PatientID"] for r in _lines(sorted_.stdout)] == ["P99", "P98"]  # sorted, then cut
    assert peer.answered[-1] == MATCHES  # with --sort every match was fetched


def test_study_level_modality_is_asked_as_modalities_in_study(
        recording: tuple[RecordingFind, RunningScp], archive_dir: Path) -> None:
    peer, scp = recording
    proc = invoke_cli("query", f"FINDSCP@127.0.0.1:{scp.port}", "-k", "Modality=CT", "--limit", "1",
                      "--json")
    assert proc.returncode == 0, proc.stderr
    asked = peer.identifiers[-1]
    assert asked.ModalitiesInStudy == "CT" and "Modality" not in asked
    assert "note: at study level Modality is asked as ModalitiesInStudy" in proc.stderr
    series = invoke_cli("query", f"FINDSCP@127.0.0.1:{scp.port}", "--level", "series",
                        "-k", "Modality=CT", "--limit", "1", "--json")
    assert "note:" not in series.stderr and peer.identifiers[-1].Modality == "CT"


def test_our_server_matches_study_level_modality(peer_factory: Callable[..., Peer],  # noqa: F811
                                                 ct_factory: Any) -> None:
    ct_factory.series(2, patient_id="PCT")
    ct_factory(patient_id="PMR", extra={"Modality": "MR"})
    peer = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")))
    node = Node(name="p", aet=peer.aet, host="127.0.0.1", port=peer.node.port)

    def patients(filters: dict[str, str]) -> list[str]:
        ident = build_identifier("STUDY", filters, ("PatientID",))
        return sorted(str(ds.PatientID) for ds in scu.find(node, ident, "S", calling_aet="ME", timeout=10))

    assert patients({"Modality": "MR"}) == ["PMR"]  # a study has no Modality: matched as ModalitiesInStudy
    assert patients({"Modality": "CT\\MR"}) == ["PCT", "PMR"]
    assert patients({"ModalitiesInStudy": "CT"}) == ["PCT"]
