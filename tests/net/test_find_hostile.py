"""C-FIND requests that try to stall the node (issue 10 item 13): a pathological wildcard query
is answered at once while other associations are served, oversized wildcard values are refused
with a status and one log line, a C-FIND has a time budget, and matching runs outside the
archive lock. Real archive, real pynetdicom associations on loopback."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from pacsctl.archive.archive import Archive
from pacsctl.dicom import matching
from pacsctl.net.scp import start_scp
from pacsctl.net.types import (
    STATUS_IDENTIFIER_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PENDING,
    STATUS_SUCCESS,
    QueryContext,
    ScpHandlers,
    ScpOptions,
)
from pacsctl.node.service import RunningNode, serve

NAME = "Abcdefghij^Klmnopqr"  # 19 characters: the case


@pytest.fixture
def node(tmp_path: Path, ct_factory) -> Iterator[RunningNode]:
    archive = Archive.open(tmp_path / "archive")
    files = [ct_factory(patient_id=f"P{i}", patient_name=NAME) for i in range(3)]
    archive.ingest([(f.read_bytes(), str(f)) for f in files])
    running = serve(archive, ScpOptions(ae_title="PACSCTL", host="127.0.0.1", port=0,
                                        temp_dir=archive.tmp_dir))
    yield running
    running.stop(graceful=False, timeout=10)


def _find(port: int, query: Dataset, results: list[int] | None = None) -> list[int]:
    """Statuses of one C-FIND (Study Root) on its own association."""
    ae = AE(ae_title="SCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCTL")
    assert assoc.is_established
    statuses = [] if results is None else results
    try:
        for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            statuses.append(int(status.Status) if status else -1)
    finally:
        assoc.release()
    return statuses


def _echo(port: int, timeout: float) -> int:
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSCTL")
    assert assoc.is_established
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else -1
    finally:
        assoc.release()


def _study_query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.timeout(120)
def test_pathological_wildcards_are_answered_at_once_and_echo_is_served_meanwhile(node):
    """25 stars and a Z: re.fullmatch backtracked for ever, holding the GIL and the archive
    lock; now it is answered (no match) and a C-ECHO on another association is answered."""
    statuses: list[int] = []
    finder = threading.Thread(target=_find, args=(node.port, _study_query(
        PatientName="*" * 25 + "Z"), statuses), daemon=True)
    finder.start()
    assert _echo(node.port, timeout=20) == STATUS_SUCCESS
    finder.join(timeout=30)
    assert not finder.is_alive(), "the C-FIND was not answered"
    assert statuses == [STATUS_SUCCESS]  # no match, answered
    assert _find(node.port, _study_query(PatientName="*" * 25 + "r")).count(STATUS_PENDING) == 3


def test_too_many_wildcards_are_refused_with_one_log_line_naming_the_keyword(node, caplog):
    value = "*Qz" * (matching.MAX_WILDCARDS + 1)
    with caplog.at_level(logging.INFO):
        assert _find(node.port, _study_query(PatientName=value)) == [STATUS_IDENTIFIER_MISMATCH]
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "PatientName" in refusals[0].getMessage()
    assert "Qz" not in caplog.text
    assert _find(node.port, _study_query(PatientName="xyz*")) == [STATUS_SUCCESS]  # still serving


def test_a_spent_time_budget_ends_the_find_with_out_of_resources(node):
    """The node's own matching loop looks at the deadline: a budget of 0 refuses at once."""
    node.scp.options.find_time_budget = 0.0
    assert _find(node.port, _study_query(PatientName="*")) == [STATUS_OUT_OF_RESOURCES]
    node.scp.options.find_time_budget = 30.0
    assert _find(node.port, _study_query(PatientName="*")).count(STATUS_PENDING) == 3


def test_the_scp_stops_sending_matches_once_the_budget_is_spent(tmp_path):
    """A find handler that does not look at the deadline: the SCP does, between matches, and
    the matches produced after the budget was spent are not sent."""
    def slow_find(model, identifier, ctx: QueryContext):
        for n in range(3):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = f"1.2.3.{n}"
            yield ds
            deadline = time.monotonic() + 30
            while not ctx.expired() and time.monotonic() < deadline:
                time.sleep(0.05)

    scp = start_scp(ScpHandlers(find=slow_find), ScpOptions(
        ae_title="PACSCTL", host="127.0.0.1", port=0, temp_dir=tmp_path, find_time_budget=1.0))
    try:
        statuses = _find(scp.port, _study_query())
    finally:
        scp.stop(graceful=False)
    assert statuses[-1] == STATUS_OUT_OF_RESOURCES
    assert statuses.count(STATUS_PENDING) <= 1


def test_matching_runs_outside_the_archive_lock(node, monkeypatch):
    """Stores wait for the archive lock; matching (a query's cost) must not hold it."""
    held: list[bool] = []
    original = matching.RecordFilter.matches

    def recording(self, record):
        held.append(node.service._lock.locked())
        return original(self, record)

    monkeypatch.setattr(matching.RecordFilter, "matches", recording)
    assert _find(node.port, _study_query(PatientName="Abc*")).count(STATUS_PENDING) == 3
    assert held and not any(held)
