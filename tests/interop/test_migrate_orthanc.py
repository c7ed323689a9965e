"""`pacsctl migrate` between two real Orthancs: proof by SOP Instance UID, resume after kill -9
with nothing sent twice (DEST counts its C-STOREs), a source that answers Success early, a study
that grows after it was done, a Latin-1 patient name, failures typed as permanent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.helpers import cli_env, free_port, invoke_cli as run_cli
from tests.interop.conftest import OrthancPair, start_orthanc_pair

pytestmark = pytest.mark.interop


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _upload_study(pair: OrthancPair, ct_factory: Any, patient_id: str, series: int = 1,
                  per_series: int = 3, **fields: Any) -> tuple[str, list[str]]:
    """A study of `series` x `per_series` instances on the source; its UID and SOP UIDs."""
    from pydicom.uid import generate_uid

    study = generate_uid()
    uids: list[str] = []
    for _ in range(series):
        for path in ct_factory.series(per_series, study_uid=study, patient_id=patient_id, **fields):
            pair.source.upload(path)
            uids.append(str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID))
    return study, uids


def _migrate(pair: OrthancPair, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("migrate", pair.spec(pair.source), pair.spec(pair.dest), "--json",
                   "--backoff", "0.2", *args)


def _dest_patient_names(pair: OrthancPair, study_uid: str) -> set[str]:
    found = pair.dest.rest("/tools/find", "POST", {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid},
                                                   "Expand": True})
    return {i["MainDicomTags"].get("PatientName", "") or "" for i in found} | {
        pair.dest.rest(f"/instances/{i['ID']}/simplified-tags")["PatientName"] for i in found}


def test_migrate_proves_each_study_then_a_rerun_sends_nothing(orthanc_pair: OrthancPair, ct_factory: Any,
                                                             archive_dir: Path) -> None:
    pair = orthanc_pair
    one, uids_one = _upload_study(pair, ct_factory, "MIG-A", series=2, per_series=3)
    latin, uids_latin = _upload_study(pair, ct_factory, "MIG-A", per_series=2, patient_name="Buc^Jérôme")
    proc = _migrate(pair, "-k", "PatientID=MIG-A", "--phi")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *studies, summary = _records(proc.stdout)
    assert summary["type"] == "summary"
    assert (summary["studies"], summary["moved"], summary["skipped"], summary["failed"]) == (2, 2, 0, 0)
    assert summary["instances"] == 8
    by_uid = {r["StudyInstanceUID"]: r for r in studies}
    assert by_uid[one]["source_instances"] == by_uid[one]["dest_instances"] == 6
    assert by_uid[latin]["status"] == "done" and by_uid[latin]["attempts"] == 1
    assert by_uid[one]["PatientID"] == "MIG-A"
    stores = Counter(pair.stores())
    assert all(stores[uid] == 1 for uid in uids_one + uids_latin), stores
    assert "Buc^Jérôme" in _dest_patient_names(pair, latin)

    again = _migrate(pair, "-k", "PatientID=MIG-A")
    assert again.returncode == 0, again.stderr
    summary = _records(again.stdout)[-1]
    assert (summary["moved"], summary["skipped"]) == (0, 2)
    assert "PatientID" not in _records(again.stdout)[0]
    assert all(Counter(pair.stores())[uid] == 1 for uid in uids_one + uids_latin)

    status = run_cli("migrate", pair.spec(pair.source), pair.spec(pair.dest), "--status", "--json")
    assert status.returncode == 0, status.stderr
    closing = _records(status.stdout)[-1]
    assert {k: closing[k] for k in ("studies", "done", "pending", "failed")} == {
        "studies": 2, "done": 2, "pending": 0, "failed": 0}


def test_a_study_that_gains_instances_after_done_is_reopened(orthanc_pair: OrthancPair, ct_factory: Any,
                                                             archive_dir: Path) -> None:
    pair = orthanc_pair
    study, uids = _upload_study(pair, ct_factory, "MIG-GROW", per_series=3)
    assert _migrate(pair, "-k", "PatientID=MIG-GROW").returncode == 0
    late = ct_factory(study_uid=study, patient_id="MIG-GROW", instance_number=9)
    pair.source.upload(late)
    late_uid = str(pydicom.dcmread(late).SOPInstanceUID)
    proc = _migrate(pair, "-k", "PatientID=MIG-GROW")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [record, summary] = _records(proc.stdout)
    assert record["status"] == "done" and record["source_instances"] == record["dest_instances"] == 4
    assert record["attempts"] == 2 and summary["moved"] == 1
    stores = Counter(pair.stores())
    assert all(stores[uid] == 1 for uid in [*uids, late_uid]), stores  # only the new one went


def test_killed_half_way_resumes_and_sends_nothing_twice(orthanc_pair: OrthancPair, ct_factory: Any,
                                                         archive_dir: Path) -> None:
    """Ctrl-C (exit 130) after 2 studies, kill -9 after 4, then a resume: every instance
    reached DEST exactly once."""
    pair = orthanc_pair
    studies = [_upload_study(pair, ct_factory, "MIG-KILL", per_series=8) for _ in range(8)]
    ledger = archive_dir / "migrations" / "SOURCE--DEST.ndjson"
    args = [sys.executable, "-m", "pacsctl", "migrate", pair.spec(pair.source), pair.spec(pair.dest),
            "-k", "PatientID=MIG-KILL", "--json"]
    for stop_after, sig in ((2, signal.SIGINT), (4, signal.SIGKILL)):
        child = subprocess.Popen(args, env=cli_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                done = ledger.read_text().count('"status": "done"') if ledger.exists() else 0
                if done >= stop_after or child.poll() is not None:
                    break
                time.sleep(0.02)
            os.killpg(child.pid, sig)
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)
        if sig is signal.SIGINT:
            assert child.returncode == 130, out + err
            assert _records(out)[-1]["interrupted"] is True and "error:" in err
        else:
            assert child.returncode == -signal.SIGKILL, "the migration ended before it could be killed"
        _wait_quiet(pair)
    report = archive_dir.parent / "board.ndjson"
    proc = _migrate(pair, "-k", "PatientID=MIG-KILL", "--parallel", "2", "--report", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _records(proc.stdout)[-1]
    assert summary["studies"] == 8 and summary["skipped"] >= 4 and summary["moved"] + summary["skipped"] == 8
    assert _records(report.read_text()) == _records(proc.stdout)  # the change board's copy
    stores = Counter(pair.stores())
    every = [uid for _, uids in studies for uid in uids]
    assert [uid for uid in every if stores[uid] != 1] == [], "sent twice or never"


def _wait_quiet(pair: OrthancPair, quiet: float = 1.0) -> None:
    """Until DEST has received nothing for `quiet` seconds (a killed C-MOVE may be finishing)."""
    last, since = len(pair.stores()), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = len(pair.stores())
        if now != last:
            last, since = now, time.monotonic()


def test_unknown_destination_fails_each_study_and_unreachable_nodes_exit_4(
        orthanc_pair: OrthancPair, ct_factory: Any, archive_dir: Path) -> None:
    pair = orthanc_pair
    _upload_study(pair, ct_factory, "MIG-NOWHERE", per_series=1)
    _upload_study(pair, ct_factory, "MIG-NOWHERE", per_series=1)
    nowhere = f"NOWHERE@127.0.0.1:{pair.dest.dicom_port}"  # answers C-ECHO; SOURCE does not know it
    proc = run_cli("migrate", pair.spec(pair.source), nowhere, "-k", "PatientID=MIG-NOWHERE", "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    *studies, summary = _records(proc.stdout)
    assert summary["failed"] == 2 and summary["moved"] == 0
    assert all(r["status"] == "failed" and "refused the C-MOVE" in r["reason"] and r["attempts"] == 1
               for r in studies), studies
    status = run_cli("migrate", pair.spec(pair.source), nowhere, "--status", "--json")
    assert _records(status.stdout)[-1]["failed"] == 2

    closed = f"DEST@127.0.0.1:{free_port()}"
    down = run_cli("migrate", pair.spec(pair.source), closed, "--timeout", "5")
    assert down.returncode == 4 and "error:" in down.stderr, down.stderr
    down = run_cli("migrate", closed, pair.spec(pair.dest), "--timeout", "5")
    assert down.returncode == 4 and "error:" in down.stderr, down.stderr


@pytest.fixture(scope="module")
def hostile_pair(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A source that answers C-MOVE Success before it has sent anything (`SynchronousCMove:
    false`) and caps C-FIND answers at 3 (`LimitFindResults`); DEST takes 20 ms over each
    instance, so the source's job is still sending when its C-MOVE answers."""
    pair = start_orthanc_pair(tmp_path_factory.mktemp("hostile"), store_delay=0.02,
                              source_config={"SynchronousCMove": False, "LimitFindResults": 3})
    yield pair
    pair.source.stop()
    pair.dest.stop()


def test_a_source_answering_success_early_is_caught_and_completed(hostile_pair: OrthancPair, ct_factory: Any,
                                                                  archive_dir: Path) -> None:
    """The check right after the early Success (--settle 0) finds instances missing; the
    retries complete the study."""
    pair = hostile_pair
    study, uids = _upload_study(pair, ct_factory, "MIG-ASYNC", series=2, per_series=15)
    proc = _migrate(pair, "-k", "PatientID=MIG-ASYNC", "--settle", "0", "--backoff", "0.5",
                    "--attempts", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [record, _] = _records(proc.stdout)
    assert record["status"] == "done" and record["dest_instances"] == 30
    lines = _records((archive_dir / "migrations" / "SOURCE--DEST.ndjson").read_text())
    early = [r for r in lines if r["status"] == "pending" and "after the source answered 0x0000"
             in (r["reason"] or "")]
    assert early, lines  # the early Success was seen as what it was
    assert set(uids) <= set(pair.stores())


def test_a_source_capping_its_answers_is_walked_in_date_slices(hostile_pair: OrthancPair, ct_factory: Any,
                                                               archive_dir: Path) -> None:
    pair = hostile_pair
    from pydicom.uid import generate_uid

    studies = [generate_uid() for _ in range(7)]
    for n, uid in enumerate(studies):
        pair.source.upload(ct_factory(study_uid=uid, patient_id="MIG-CAP", study_date=f"2023051{n}"))
    capped = _migrate(pair, "-k", "PatientID=MIG-CAP")  # default cap 1000: 3 answers look complete
    assert capped.returncode == 0 and _records(capped.stdout)[-1]["studies"] == 3
    sliced = _migrate(pair, "-k", "PatientID=MIG-CAP", "--find-cap", "3", "--parallel", "3")
    assert sliced.returncode == 0, sliced.stdout + sliced.stderr
    *records, summary = _records(sliced.stdout)
    assert {r["StudyInstanceUID"] for r in records} == set(studies)
    assert (summary["studies"], summary["skipped"], summary["moved"]) == (7, 3, 4)
    assert summary["queries"] > 3


def test_via_archive_gets_into_the_archive_then_stores_to_dest(orthanc_pair: OrthancPair, ct_factory: Any,
                                                              archive_dir: Path) -> None:
    pair = orthanc_pair
    study, uids = _upload_study(pair, ct_factory, "MIG-VIA", series=2, per_series=2)
    dry = run_cli("migrate", pair.spec(pair.source), pair.spec(pair.dest), "-k", "PatientID=MIG-VIA",
                  "--dry-run", "--json")
    assert dry.returncode == 0 and _records(dry.stdout)[-1]["would_move"] == 1
    assert not (archive_dir / "migrations").exists()  # a dry run writes nothing
    first = _migrate(pair, "-k", "PatientID=MIG-VIA", "--via-archive", "--limit", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    [record, summary] = _records(first.stdout)
    assert record["status"] == "done" and summary["instances"] == 4
    listed = _records(run_cli("ls", "--level", "instance", "--json", "-k", f"StudyInstanceUID={study}").stdout)
    assert {r["SOPInstanceUID"] for r in listed} == set(uids)  # hashed and kept on the way
    stores = Counter(pair.stores())
    assert all(stores[uid] == 1 for uid in uids), stores


def test_diff_between_two_orthancs_and_the_archive(orthanc_pair: OrthancPair, ct_factory: Any,
                                                   archive_dir: Path) -> None:
    pair = orthanc_pair
    from pydicom.uid import generate_uid

    def study(count: int) -> tuple[str, list[Path]]:
        uid = generate_uid()
        return uid, ct_factory.series(count, study_uid=uid, patient_id="DIFF")

    (both, both_files), (only_a, a_files), (only_b, b_files), (short, short_files) = (
        study(2), study(1), study(1), study(3))
    for path in both_files + a_files + short_files:
        pair.source.upload(path)
    for path in both_files + b_files + short_files[:2]:
        pair.dest.upload(path)
    a, b = pair.spec(pair.source), pair.spec(pair.dest)
    proc = run_cli("diff", a, b, "-k", "PatientID=DIFF", "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    *found, summary = _records(proc.stdout)
    assert {(r["difference"], r["StudyInstanceUID"]) for r in found} == {
        ("only in A", only_a), ("only in B", only_b), ("instance count differs", short)}
    assert (summary["only_in_a"], summary["only_in_b"], summary["differ"], summary["equal"]) == (1, 1, 1, 1)

    series = _records(run_cli("diff", a, b, "-k", "PatientID=DIFF", "--level", "series", "--json").stdout)
    [counted] = [r for r in series if r.get("difference") == "instance count differs"]
    assert counted["SeriesInstanceUID"] == str(pydicom.dcmread(short_files[0]).SeriesInstanceUID)
    assert (counted["a"], counted["b"]) == (3, 2)

    uids = _records(run_cli("diff", a, b, "-k", "PatientID=DIFF", "--level", "instance", "--json").stdout)
    [differ] = [r for r in uids if r.get("difference") == "instances differ"]
    assert (differ["only_in_a"], differ["only_in_b"]) == (1, 0)
    assert differ["example"] == str(pydicom.dcmread(short_files[2]).SOPInstanceUID)

    as_csv = run_cli("diff", a, b, "-k", "PatientID=DIFF", "--csv")
    assert as_csv.returncode == 3 and as_csv.stdout.splitlines()[0].startswith("difference,StudyInstanceUID")
    assert len(as_csv.stdout.splitlines()) == 4

    equal = run_cli("diff", a, b, "-k", f"StudyInstanceUID={both}", "--level", "instance")
    assert equal.returncode == 0, equal.stdout + equal.stderr
    assert run_cli("import", *both_files).returncode == 0
    against_archive = run_cli("diff", "archive", a, "-k", f"StudyInstanceUID={both}\\{short}",
                              "--level", "instance", "--json")
    assert against_archive.returncode == 3
    [missing] = _records(against_archive.stdout)[:-1]
    assert (missing["difference"], missing["StudyInstanceUID"]) == ("only in B", short)


def test_commit_waits_for_dests_storage_commitment_report(orthanc_pair: OrthancPair, ct_factory: Any,
                                                          archive_dir: Path) -> None:
    pair = orthanc_pair
    _upload_study(pair, ct_factory, "MIG-COMMIT", series=2, per_series=2)
    port = free_port()
    assert run_cli("config", "set", "port", str(port)).returncode == 0
    # DEST does not know us yet: it cannot send its report, and the study is not done.
    unknown = _migrate(pair, "-k", "PatientID=MIG-COMMIT", "--commit", "--commit-wait", "2", "--attempts", "1")
    assert unknown.returncode == 3, unknown.stdout + unknown.stderr
    [record, _] = _records(unknown.stdout)
    assert record["status"] == "failed" and record["committed"] in (None, False), record
    assert "Storage Commitment" in record["reason"], record

    pair.dest.add_modality("pacsctl", "PACSCTL", "127.0.0.1", port)
    proc = _migrate(pair, "-k", "PatientID=MIG-COMMIT", "--commit", "--retry-failed")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [record, summary] = _records(proc.stdout)
    assert record["status"] == "done" and record["committed"] is True and record["dest_instances"] == 4
    assert summary["moved"] == 1


@pytest.fixture
def dcmqrscp_source(tmp_path: Path, orthanc_pair: OrthancPair) -> Iterator[Any]:
    """DCMTK dcmqrscp (AE QR): strictly hierarchical, no counts in its answers, and knows the
    pair's DEST Orthanc as a C-MOVE destination."""
    from benchmarks.peers import PeerError, wait_for_port
    from tests.helpers import dcmtk, dcmtk_env

    binary = dcmtk("dcmqrscp")
    db = tmp_path / "qrdb"
    db.mkdir()
    port = free_port()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        f"HostTable BEGIN\ndest = (DEST, 127.0.0.1, {orthanc_pair.dest.dicom_port})\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nQR {db} RW (200, 1024mb) ANY\nAETable END\n")
    proc = subprocess.Popen([binary, "-c", str(config)], env=dcmtk_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 15, proc)
    except PeerError as exc:
        proc.kill()
        pytest.fail(str(exc))
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_migrate_from_a_hierarchical_dcmqrscp_moves_only_what_dest_lacks(
        dcmqrscp_source: int, orthanc_pair: OrthancPair, ct_factory: Any, archive_dir: Path) -> None:
    from pydicom.uid import generate_uid

    from tests.helpers import run_dcmtk

    pair, port = orthanc_pair, dcmqrscp_source
    study = generate_uid()
    files = [*ct_factory.series(2, study_uid=study, patient_id="MIG-QR"),
             *ct_factory.series(2, study_uid=study, patient_id="MIG-QR")]
    other = ct_factory.series(1, patient_id="MIG-QR")
    run_dcmtk("storescu", "-aec", "QR", "127.0.0.1", str(port), *map(str, files + other))
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files + other]
    pair.dest.upload(files[0])  # DEST holds one instance of the study already
    before = Counter(pair.stores())
    source = f"QR@127.0.0.1:{port}"
    proc = run_cli("migrate", source, pair.spec(pair.dest), "-k", "PatientID=MIG-QR", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *records, summary = _records(proc.stdout)
    assert summary["moved"] == 2 and summary["instances"] == 5
    assert {r["StudyInstanceUID"]: r["source_instances"] for r in records}[study] == 4
    sent = Counter(pair.stores()) - before
    assert sent == Counter(uids[1:]), sent  # the one DEST held was not sent again
    same = run_cli("diff", source, pair.spec(pair.dest), "-k", "PatientID=MIG-QR", "--level", "instance")
    assert same.returncode == 0, same.stdout + same.stderr


def test_dest_killed_mid_study_and_restarted_the_study_completes(tmp_path: Path, ct_factory: Any,
                                                                 archive_dir: Path) -> None:
    # DEST takes 50 ms over each instance, so the study is still arriving when it is killed.
    pair = start_orthanc_pair(tmp_path / "crash", store_delay=0.05)
    try:
        study, uids = _upload_study(pair, ct_factory, "MIG-CRASH", series=2, per_series=20)
        args = [sys.executable, "-m", "pacsctl", "migrate", pair.spec(pair.source), pair.spec(pair.dest),
                "--json", "--backoff", "0.5", "--attempts", "8", "--settle", "1", "--timeout", "5"]
        child = subprocess.Popen(args, env=cli_env(None), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while len(pair.stores()) < 10 and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.02)
            assert child.poll() is None and len(pair.stores()) < 40, "the study arrived before the kill"
            pair.dest.restart()  # kill -9, then up again on the same port
            out, err = child.communicate(timeout=90)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)
        assert child.returncode == 0, out + err
        [record, _] = _records(out)
        assert record["status"] == "done" and record["dest_instances"] == 40 and record["attempts"] >= 2, record
        assert set(uids) <= pair.dest.instance_uids()
    finally:
        pair.source.stop()
        pair.dest.stop()


def test_outside_the_window_nothing_moves_until_stopped(orthanc_pair: OrthancPair, ct_factory: Any,
                                                       tmp_path: Path) -> None:
    """The library call: a window that is closed now sleeps (cancellable) and sends nothing."""
    import datetime as dt
    import threading

    from pacsctl.config import Node
    from pacsctl.migrate.ledger import Ledger
    from pacsctl.migrate.run import MigrateOptions, migrate
    from pacsctl.migrate.window import Window
    from pacsctl.net.cancel import Cancellation

    pair = orthanc_pair
    _study, uids = _upload_study(pair, ct_factory, "MIG-WINDOW", per_series=2)
    later = dt.datetime.now() + dt.timedelta(hours=2)
    closed = Window(later.time().replace(second=0, microsecond=0),
                    (later + dt.timedelta(hours=1)).time().replace(second=0, microsecond=0))
    (tmp_path / "tmp").mkdir()
    ledger = Ledger.open(tmp_path, "SOURCE", "DEST")
    source = Node("source", "SOURCE", "127.0.0.1", pair.source.dicom_port)
    dest = Node("dest", "DEST", "127.0.0.1", pair.dest.dicom_port)
    cancel = Cancellation()
    threading.Timer(1.0, cancel.cancel).start()
    started = time.monotonic()
    summary, [entry] = migrate(source, dest, ledger,
                               MigrateOptions(filters={"PatientID": "MIG-WINDOW"}, window=closed), cancel)
    assert 0.9 <= time.monotonic() - started < 20
    assert summary.interrupted and summary.pending == 1 and entry.attempts == 0
    assert not set(uids) & set(pair.stores())
