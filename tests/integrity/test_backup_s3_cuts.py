"""`backup s3://` when the network breaks mid-transfer: a real TCP proxy (tests/netproxy.py)
between pacsctl and the real S3 store (Swift) cuts every connection after N bytes, or goes
silent. The run ends with exit 4 in one line, the manifest lists nothing the bucket does not
hold with its SHA-256, the next run sends only what is missing, and the backup verifies."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pacsctl.integrity.manifest import MANIFEST_NAME, parse_manifest
from pacsctl.integrity.offsite import backup_to_bucket
from pacsctl.storage import objects
from pacsctl.storage.lease import LEASE_NAME
from pacsctl.storage.objects import MIN_PART_SIZE, ObjectStore, ObjectStoreError, ObjectStoreFailure
from tests.helpers import invoke_cli
from tests.integrity.test_verify import make_archive, stored
from tests.netproxy import NetProxy

pytestmark = pytest.mark.interop

# A cut (a reset) fails a try at once: two tries each, time-outs generous for a loaded machine's
# Swift (they bound a socket's silence, not a transfer). The dead link's test shortens them.
CONNECT_TIMEOUT, READ_TIMEOUT, MAX_ATTEMPTS = 5.0, 10.0, 2
DEAD_CONNECT_TIMEOUT, DEAD_READ_TIMEOUT = 1.0, 1.5


@pytest.fixture(autouse=True)
def _quick_giving_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(objects, "CONNECT_TIMEOUT", CONNECT_TIMEOUT)
    monkeypatch.setattr(objects, "READ_TIMEOUT", READ_TIMEOUT)
    monkeypatch.setattr(objects, "MAX_ATTEMPTS", MAX_ATTEMPTS)


@pytest.fixture
def proxy(s3_store: Any) -> Any:
    with NetProxy(("127.0.0.1", s3_store.port), lifetime=120) as link:
        yield link


def through(proxy: NetProxy, url: str) -> ObjectStore:
    """The bucket through the proxy, objects over 5 MiB in 5 MiB parts."""
    return ObjectStore(
        url, endpoint_url=proxy.url, multipart_threshold=MIN_PART_SIZE, part_size=MIN_PART_SIZE
    )


def assert_manifest_only_lists_what_is_there(url: str) -> int:
    """Every manifest entry is in the bucket with its size and SHA-256; returns how many."""
    store = ObjectStore(url)
    if store.head(MANIFEST_NAME) is None:
        return 0
    manifest = parse_manifest(store.get_bytes(MANIFEST_NAME))
    for path, entry in manifest.entries.items():
        info = store.head(path)
        assert info is not None, f"{path} listed, not in the bucket"
        assert (info.size, info.sha256) == (entry.size, entry.sha256)
    return len(manifest.entries)


def end_of_the_dead_run(url: str) -> None:
    """The failed run could not delete its lease through the broken link (it is left to
    expire). A new process on this host takes over a dead pid's lease at once; this test's
    process is alive, so the test plays that part."""
    store = ObjectStore(url)
    assert store.head(LEASE_NAME) is not None
    store.delete([LEASE_NAME])


def objects_in(url: str) -> dict[str, Any]:
    store = ObjectStore(url)
    return {o.relpath: store.head(o.relpath) for o in store.iter_objects("objects")}


def test_a_cut_mid_multipart_upload_is_exit_4_and_the_next_run_sends_only_the_rest(
    archive_dir: Path, ct_factory: Any, s3_url: str, proxy: NetProxy
) -> None:
    small = ct_factory.series(6, patient_id="P1")
    arch = make_archive(archive_dir, small)
    assert backup_to_bucket(arch, ObjectStore(s3_url)).summary.copied == 6  # a manifest exists
    big = ct_factory(patient_id="P2", rows=2400, cols=2400)  # 11.5 MB: three parts
    more = ct_factory.series(4, patient_id="P3")
    arch.ingest([(p.read_bytes(), str(p)) for p in [big, *more]])
    recs = {r["path"]: r for r in stored(arch)}
    big_path = next(p for p, r in recs.items() if r["size"] > 10 << 20)

    proxy.cut_after(7 << 20)  # in the second part
    with pytest.raises(ObjectStoreError) as caught:
        backup_to_bucket(arch, through(proxy, s3_url), jobs=2)
    assert caught.value.failure is ObjectStoreFailure.NETWORK and caught.value.exit_code == 4
    assert proxy.wait_cut(0) and proxy.forwarded >= 7 << 20
    present = objects_in(s3_url)
    assert big_path not in present  # no object from a broken multipart upload
    assert assert_manifest_only_lists_what_is_there(s3_url) >= 6

    end_of_the_dead_run(s3_url)
    proxy.heal()
    again = backup_to_bucket(arch, through(proxy, s3_url), jobs=2).summary
    assert again.instances == 11 and again.failed == 0
    assert again.copied == 11 - len(present)  # only what was missing went up
    assert again.skipped + again.adopted == len(present)
    assert assert_manifest_only_lists_what_is_there(s3_url) == 11
    assert ObjectStore(s3_url).head(big_path).sha256 == recs[big_path]["sha256"]  # type: ignore[union-attr]
    arch.close()
    check = invoke_cli("verify", "--backup", s3_url)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_cut_during_single_puts_is_exit_4_in_one_line_then_resumes(
    archive_dir: Path, ct_factory: Any, s3_url: str, proxy: NetProxy
) -> None:
    make_archive(archive_dir, ct_factory.series(40, patient_id="P1")).close()
    proxy.cut_after(150_000)  # ~15 of 40 instances (9 kB each)
    result = invoke_cli("backup", s3_url, "--endpoint-url", proxy.url, "--jobs", "2")
    assert result.returncode == 4, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert [line for line in lines if line.startswith("error: ")] == [lines[0]]
    present = objects_in(s3_url)
    assert 0 < len(present) < 40
    assert_manifest_only_lists_what_is_there(s3_url)

    end_of_the_dead_run(s3_url)
    proxy.heal()
    again = invoke_cli("backup", s3_url, "--endpoint-url", proxy.url, "--json")
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout.splitlines()[-1])
    assert s["instances"] == 40 and s["copied"] == 40 - len(present)
    assert s["adopted"] + s["skipped"] == len(present)
    check = invoke_cli("verify", "--backup", s3_url)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_transient_cut_mid_multipart_is_ridden_out_by_the_retries(
    archive_dir: Path, ct_factory: Any, s3_url: str, proxy: NetProxy
) -> None:
    arch = make_archive(archive_dir, [ct_factory(rows=2400, cols=2400)])
    proxy.cut_after(7 << 20, stay_down=False)  # the connections break once, new ones go through
    report = backup_to_bucket(arch, through(proxy, s3_url))
    assert proxy.wait_cut(0) and proxy.cuts >= 1
    assert report.ok and report.summary.copied == 1
    assert assert_manifest_only_lists_what_is_there(s3_url) == 1
    arch.close()
    assert invoke_cli("verify", "--backup", s3_url).returncode == 0


def test_a_dead_link_ends_the_backup_with_exit_4_in_bounded_time(
    archive_dir: Path, ct_factory: Any, s3_url: str, proxy: NetProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing forwarded, nothing closed: every read times out, the run ends with exit 4 after
    one request's tries and two single tries (with the defaults, 5 tries of 10 s connect + 60 s
    read plus the back-off, then 2 x 70 s: at most ~8.5 minutes), never later."""
    make_archive(archive_dir, ct_factory.series(30, patient_id="P1")).close()
    monkeypatch.setattr(objects, "CONNECT_TIMEOUT", DEAD_CONNECT_TIMEOUT)
    monkeypatch.setattr(objects, "READ_TIMEOUT", DEAD_READ_TIMEOUT)
    proxy.blackhole_after(100_000)  # silent: nothing forwarded, nothing closed
    started = time.monotonic()
    result = invoke_cli("backup", s3_url, "--endpoint-url", proxy.url, "--jobs", "2")
    elapsed = time.monotonic() - started
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    # the uploads in flight give up together (none starts after), each after MAX_ATTEMPTS *
    # (connect + read time-out) and botocore's back-off; then the manifest's last-chance write
    # and the lease's release try once each (a PUT may wait out a read time-out twice: its
    # 100-continue, then the answer)
    one_try = DEAD_CONNECT_TIMEOUT + DEAD_READ_TIMEOUT
    bound = MAX_ATTEMPTS * one_try + 2.0 + 2 * (one_try + DEAD_READ_TIMEOUT)
    print(f"dead link: exit 4 after {elapsed:.1f} s (bound {bound:.0f} s)")
    assert elapsed < bound + 10.0  # slack for a loaded machine; the defaults would take minutes
    assert_manifest_only_lists_what_is_there(s3_url)
    end_of_the_dead_run(s3_url)
    proxy.heal()
    monkeypatch.setattr(objects, "READ_TIMEOUT", READ_TIMEOUT)
    assert invoke_cli("backup", s3_url, "--endpoint-url", proxy.url).returncode == 0
    assert invoke_cli("verify", "--backup", s3_url).returncode == 0
