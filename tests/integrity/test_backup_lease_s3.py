"""One writer per bucket prefix: the lease `PREFIX/.pacsctl-lock` on the real S3 store (OpenStack
Swift on loopback, which has no conditional PUTs: the write-then-read-back path), with real
`pacsctl backup` processes held mid-run (tests/integrity/stalled.py). Lease times are short here."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pacsctl.integrity.offsite import backup_to_bucket, open_store
from pacsctl.storage.lease import LEASE_NAME, TTL_ENV, Lease, LeaseRecord
from pacsctl.storage.locks import LockBusy
from pacsctl.storage.objects import ObjectStore
from tests.helpers import invoke_cli
from tests.integrity.stalled import StalledBackup, first_file
from tests.integrity.test_verify import make_archive

pytestmark = pytest.mark.interop

TTL = 9.0  # seconds, renewed every 3 s: short enough to see renewals, long enough for a loaded machine


@pytest.fixture
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TTL_ENV, str(TTL))


@pytest.fixture
def stalled(archive_dir: Path, ct_factory: Any, s3_url: str) -> Iterator[StalledBackup]:
    archive = make_archive(archive_dir, ct_factory.series(4, patient_id="P1"))
    run = StalledBackup(archive.path_of(first_file(archive)), "backup", s3_url, "--jobs", "2")
    archive.close()
    yield run
    run.close()


def lease_of(url: str) -> LeaseRecord | None:
    store = ObjectStore(url)
    if store.head(LEASE_NAME) is None:
        return None
    return LeaseRecord.parse(store.get_bytes(LEASE_NAME))


def holds_lease(url: str) -> Any:
    def holds(pid: int) -> bool:
        record = lease_of(url)
        return record is not None and record.pid == pid

    return holds


def plant_lease(url: str, *, host: str, pid: int, expires_in: float) -> LeaseRecord:
    record = LeaseRecord("f" * 32, "backup", host, pid, "2026-01-01T00:00:00+00:00", time.time() + expires_in, 60)
    ObjectStore(url).put_bytes(LEASE_NAME, record.encode())
    return record


def test_a_second_backup_into_the_prefix_is_refused_while_the_first_renews(
    stalled: StalledBackup, s3_url: str, short_leases: None
) -> None:
    pid = stalled.start(holds_lease(s3_url))
    first = lease_of(s3_url)
    deadline = time.monotonic() + 60
    while (record := lease_of(s3_url)) is not None and record.expires == first.expires:
        assert time.monotonic() < deadline, "the lease was never renewed"
        time.sleep(0.2)
    assert record is not None and record.pid == pid and record.owner == first.owner  # renewed, same run
    assert record.host == socket.gethostname() and record.what == "backup"
    second = invoke_cli("backup", s3_url)
    assert second.returncode == 1
    line = second.stderr.strip().splitlines()[0]
    assert line == f"error: {s3_url} is in use by backup (pid {pid}, since {record.started})"
    repair = invoke_cli("verify", "--backup", s3_url, "--repair")
    assert repair.returncode == 1 and f"in use by backup (pid {pid}," in repair.stderr
    done = stalled.feed()
    assert done.returncode == 0, done.stderr
    assert lease_of(s3_url) is None  # released at the end


def test_after_kill_9_the_next_backup_on_this_host_takes_the_lease_at_once(
    stalled: StalledBackup, s3_url: str
) -> None:
    pid = stalled.start(holds_lease(s3_url))  # the default lease time: minutes
    stalled.kill()
    record = lease_of(s3_url)
    assert record.pid == pid and record.expires > time.time() + 30  # left behind, far from expiry
    again = invoke_cli("backup", s3_url, "--json")
    assert again.returncode == 0, again.stderr
    assert f"taking over the lock of backup (pid {pid}" in again.stderr
    assert f"its process (pid {pid}) on this host is gone" in again.stderr
    assert json.loads(again.stdout.splitlines()[-1])["instances"] == 4
    assert lease_of(s3_url) is None


def test_a_lease_of_another_host_is_respected_until_it_expires(
    archive_dir: Path, ct_factory: Any, s3_url: str
) -> None:
    make_archive(archive_dir, ct_factory.series(2, patient_id="P2")).close()
    plant_lease(s3_url, host="other-host.example", pid=4242, expires_in=600)
    refused = invoke_cli("backup", s3_url)
    assert refused.returncode == 1
    assert "in use by backup (pid 4242 on other-host.example, since 2026-01-01T00:00:00+00:00)" in refused.stderr
    assert "--break-lock" in refused.stderr
    plant_lease(s3_url, host="other-host.example", pid=4242, expires_in=-1)  # its writer stopped renewing
    taken = invoke_cli("backup", s3_url)
    assert taken.returncode == 0, taken.stderr
    assert "warning: taking over the lock of backup (pid 4242 on other-host.example" in taken.stderr
    assert "expired at" in taken.stderr
    assert lease_of(s3_url) is None


def test_break_lock_takes_a_live_lease(archive_dir: Path, ct_factory: Any, s3_url: str) -> None:
    make_archive(archive_dir, ct_factory.series(2, patient_id="P2")).close()
    plant_lease(s3_url, host="other-host.example", pid=4242, expires_in=600)
    broken = invoke_cli("backup", s3_url, "--break-lock")
    assert broken.returncode == 0, broken.stderr
    assert "--break-lock" in broken.stderr and "taking over" in broken.stderr
    assert lease_of(s3_url) is None
    usage = invoke_cli("backup", str(archive_dir.parent / "nas"), "--break-lock")
    assert usage.returncode == 2


def test_swift_has_no_conditional_put_so_the_lease_is_written_then_read_back(
    archive_dir: Path, ct_factory: Any, s3_url: str
) -> None:
    """The test store refuses If-None-Match (NotImplemented): the fallback is what runs here."""
    store = open_store(s3_url)
    with Lease(store, "backup", ttl=TTL, settle=0.2) as held:
        assert held.conditional is False
        with pytest.raises(LockBusy) as caught:
            Lease(store, "verify --repair", ttl=TTL, settle=0.2).acquire()
        assert caught.value.holder is not None and caught.value.holder.what == "backup"
        archive = make_archive(archive_dir, ct_factory.series(1, patient_id="P3"))
        try:
            with pytest.raises(LockBusy):
                backup_to_bucket(archive, store)
        finally:
            archive.close()
    assert store.head(LEASE_NAME) is None


def test_a_lease_taken_over_meanwhile_stops_the_run_at_its_next_manifest_write(s3_url: str) -> None:
    from pacsctl.storage.lease import LeaseLost

    store = open_store(s3_url)
    held = Lease(store, "backup", ttl=0.6, settle=0.1)
    held.acquire()
    try:
        # A --break-lock elsewhere, taken as that run takes it: written, then confirmed after a
        # while. A renewal of ours that read the lease just before the write overwrites it (the
        # breaker then finds ours and gives up: still one owner); such a write is no take-over.
        deadline = time.monotonic() + 20
        while not held.lost and time.monotonic() < deadline:
            record = lease_of(s3_url)
            if record is None or record.pid != 4242:
                plant_lease(s3_url, host="other-host.example", pid=4242, expires_in=600)
            time.sleep(held.ttl)
        with pytest.raises(LeaseLost):
            held.check()
    finally:
        held.release()
    assert lease_of(s3_url).pid == 4242  # the other run's lease is left alone


def test_wait_waits_for_a_live_lease_to_expire_then_takes_it_over(s3_url: str) -> None:
    store = open_store(s3_url)
    plant_lease(s3_url, host="other-host.example", pid=4242, expires_in=3.0)
    waited: list[Any] = []
    taken: list[str] = []
    lease = Lease(
        store, "backup", ttl=TTL, settle=0.2, wait=True,
        on_wait=waited.append, on_takeover=lambda holder, why: taken.append(why),
    )
    lease.acquire()
    try:
        assert [h.pid for h in waited] == [4242] and len(taken) == 1 and "expired at" in taken[0]
        assert lease_of(s3_url).owner == lease.owner
    finally:
        lease.release()
    assert lease_of(s3_url) is None
