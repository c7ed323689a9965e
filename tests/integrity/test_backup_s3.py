"""`backup s3://`: the folder backup's manifest and snapshot on a real S3 store (OpenStack
Swift on loopback): incremental, SHA-256 per object, resumable, wrong keys, pruning."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pacsctl.archive.archive import Archive
from pacsctl.integrity import findings as F
from pacsctl.integrity.manifest import MANIFEST_NAME, parse_manifest
from pacsctl.integrity.offsite import backup_to_bucket, open_store
from pacsctl.integrity.offsite_check import verify_bucket
from pacsctl.integrity.reindex import reindex
from pacsctl.integrity.verify import QUICK
from pacsctl.storage.objects import ObjectStore, ObjectStoreError, ObjectStoreFailure
from tests.helpers import cli_env, free_port, invoke_cli
from tests.integrity.test_verify import make_archive, stored

pytestmark = pytest.mark.interop


@pytest.fixture
def archive(archive_dir: Path, ct_factory: Any) -> Archive:
    arch = make_archive(archive_dir, ct_factory.series(4, patient_id="P1") + ct_factory.series(2, patient_id="P2"))
    yield arch
    arch.close()


def bucket_manifest(url: str) -> dict[str, Any]:
    manifest = parse_manifest(ObjectStore(url).get_bytes(MANIFEST_NAME))
    assert manifest.damage == []
    return manifest.entries


def test_first_backup_uploads_everything_with_sha256_metadata_and_a_manifest(archive: Archive, s3_url: str) -> None:
    report = backup_to_bucket(archive, open_store(s3_url))
    s = report.summary
    assert (s.copied, s.skipped, s.failed, s.instances) == (6, 0, 0, 6) and report.ok
    recs = archive.index.instances()
    store = ObjectStore(s3_url)
    entries = bucket_manifest(s3_url)
    assert {p: (e.size, e.sha256, e.sop_instance_uid, e.study_uid) for p, e in entries.items()} == {
        r["path"]: (r["size"], r["sha256"], r["SOPInstanceUID"], r["StudyInstanceUID"]) for r in recs
    }
    for rec in recs:
        info = store.head(rec["path"])
        assert info is not None and (info.size, info.sha256) == (rec["size"], rec["sha256"])
        assert store.get_bytes(rec["path"]) == archive.path_of(rec["path"]).read_bytes()
    assert store.head("pacsctl.toml") is not None
    assert s.versioning == "" and not s.worm  # Swift: no versioning asked, no object lock


def test_backup_to_a_bucket_is_incremental(archive: Archive, s3_url: str, ct_factory: Any) -> None:
    backup_to_bucket(archive, open_store(s3_url))
    again = backup_to_bucket(archive, open_store(s3_url)).summary
    assert (again.copied, again.skipped, again.adopted, again.bytes) == (0, 6, 0, 0)
    new = ct_factory(patient_id="P3")
    archive.ingest([(new.read_bytes(), str(new))])
    third = backup_to_bucket(archive, open_store(s3_url)).summary
    assert (third.copied, third.skipped, third.instances) == (1, 6, 7)


def test_objects_uploaded_but_not_yet_listed_are_adopted_not_sent_again(archive: Archive, s3_url: str) -> None:
    """What a run killed between its uploads and its manifest leaves: the next run HEADs them."""
    backup_to_bucket(archive, open_store(s3_url))
    store = ObjectStore(s3_url)
    store.delete([MANIFEST_NAME])
    s = backup_to_bucket(archive, open_store(s3_url)).summary
    assert (s.copied, s.adopted, s.instances) == (0, 6, 6)
    assert len(bucket_manifest(s3_url)) == 6


def test_an_archive_file_that_rotted_is_not_uploaded(archive: Archive, s3_url: str) -> None:
    rec = stored(archive)[0]
    path = archive.path_of(rec["path"])
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    report = backup_to_bucket(archive, open_store(s3_url))
    assert not report.ok and report.summary.failed == 1
    assert [(f.path, f.problem) for f in report.findings] == [(rec["path"], F.COPY_FAILED)]
    assert ObjectStore(s3_url).head(rec["path"]) is None
    assert rec["path"] not in bucket_manifest(s3_url)


def test_nothing_is_deleted_remotely_without_prune(archive: Archive, s3_url: str) -> None:
    backup_to_bucket(archive, open_store(s3_url))
    gone = stored(archive)[0]
    archive.path_of(gone["path"]).unlink()
    reindex(archive)  # the archive has lost it for good
    store = ObjectStore(s3_url)
    store.put_bytes("objects/zz/zz/stray.dcm", b"stray")
    kept = backup_to_bucket(archive, open_store(s3_url)).summary
    assert (kept.pruned, kept.instances) == (0, 6)
    assert store.head("objects/zz/zz/stray.dcm") is not None and store.head(gone["path"]) is not None
    pruned = backup_to_bucket(archive, open_store(s3_url), prune=True).summary
    assert (pruned.pruned, pruned.instances) == (2, 5)
    assert store.head("objects/zz/zz/stray.dcm") is None and store.head(gone["path"]) is None
    assert gone["path"] not in bucket_manifest(s3_url)


def test_a_wrong_key_is_a_clear_error_exit_1_and_nothing_is_marked_done(
    archive: Archive, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive.close()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    result = invoke_cli("backup", s3_url)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "refused the credentials" in result.stderr
    assert "wrong-secret" not in result.stderr + result.stdout
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert list(ObjectStore(s3_url).iter_objects()) == []  # no manifest, no object
    audit = (archive.root / "audit.log")
    assert not audit.exists() or "backup" not in audit.read_text()


def test_backup_cli_to_a_bucket_json_and_protection_warning(archive: Archive, s3_url: str) -> None:
    archive.close()
    result = invoke_cli("backup", s3_url, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["copied"] == 6 and summary["dest"] == s3_url
    assert "neither versioning nor Object Lock" in result.stderr


def damage(url: str, rewrite: str, delete: str) -> None:
    """Rewrite one object with other bytes of the same size (and a matching metadata hash:
    only the manifest knows better), delete another, add one nobody listed."""
    store = ObjectStore(url)
    data = bytearray(store.get_bytes(rewrite))
    data[-1] ^= 0xFF
    store.put_bytes(rewrite, bytes(data))
    store.delete([delete])
    store.put_bytes("objects/00/00/extra.dcm", b"extra")


def test_verify_a_bucket_finds_rewritten_deleted_and_extra_objects(archive: Archive, s3_url: str) -> None:
    backup_to_bucket(archive, open_store(s3_url))
    assert verify_bucket(open_store(s3_url), archive).summary.status == "ok"
    recs = stored(archive)
    damage(s3_url, recs[0]["path"], recs[1]["path"])
    report = verify_bucket(open_store(s3_url), None)
    assert {(f.path, f.problem, f.where) for f in report.findings} == {
        (recs[0]["path"], F.HASH_MISMATCH, F.BACKUP),
        (recs[1]["path"], F.MISSING, F.BACKUP),
        ("objects/00/00/extra.dcm", F.UNKNOWN_FILE, F.BACKUP),
    }
    assert report.summary.hashed == 5 and not report.summary.ok
    quick = verify_bucket(open_store(s3_url), None, mode=QUICK).summary
    assert (quick.hashed, quick.problems) == (0, 2)  # the listing alone cannot see a rewrite
    sampled = verify_bucket(open_store(s3_url), None, sample=0.2).summary
    assert sampled.hashed == 1 and sampled.mode == "sample 0.2"


def test_verify_repair_uploads_damaged_objects_again_from_the_archive(archive: Archive, s3_url: str) -> None:
    backup_to_bucket(archive, open_store(s3_url))
    recs = stored(archive)
    damage(s3_url, recs[0]["path"], recs[1]["path"])
    report = verify_bucket(open_store(s3_url), archive, repair=True)
    actions = {f.path: f.action for f in report.findings}
    assert actions[recs[0]["path"]] == actions[recs[1]["path"]] == F.RECOPIED
    assert report.summary.status == "problems"  # the extra object is still there, reported
    again = verify_bucket(open_store(s3_url), archive)
    assert [(f.path, f.problem) for f in again.findings] == [("objects/00/00/extra.dcm", F.UNKNOWN_FILE)]
    store = ObjectStore(s3_url)
    assert store.get_bytes(recs[0]["path"]) == archive.path_of(recs[0]["path"]).read_bytes()


def test_verify_cli_on_a_bucket_exit_3_with_named_problems(archive: Archive, s3_url: str) -> None:
    archive.close()
    assert invoke_cli("backup", s3_url).returncode == 0
    assert invoke_cli("verify", "--backup", s3_url).returncode == 0
    recs = stored(Archive.open(archive.root, create=False))
    ObjectStore(s3_url).delete([recs[2]["path"]])
    result = invoke_cli("verify", "--backup", s3_url, "--json")
    assert result.returncode == 3
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["path"], r["problem"]) for r in records if r["type"] == "problem"] == [(recs[2]["path"], "missing")]
    fixed = invoke_cli("verify", "--backup", s3_url, "--repair")
    assert fixed.returncode == 3 and "repaired" in fixed.stdout + fixed.stderr
    assert invoke_cli("verify", "--backup", s3_url).returncode == 0


def test_a_backup_killed_mid_way_resumes_without_sending_again(
    archive_dir: Path, ct_factory: Any, s3_url: str
) -> None:
    """kill -9 while uploading (before any manifest checkpoint): the next run adopts what the
    killed one uploaded (HEAD shows the SHA-256), uploads the rest, and the backup verifies."""
    total = 120
    arch = make_archive(archive_dir, ct_factory.series(total, patient_id="P9"))
    arch.close()
    store = ObjectStore(s3_url)
    child = subprocess.Popen(
        [sys.executable, "-m", "pacsctl", "backup", s3_url, "--jobs", "1"],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    uploaded = 0
    while time.monotonic() < deadline and child.poll() is None:
        uploaded = sum(o.relpath.startswith("objects/") for o in store.iter_objects())
        if uploaded >= 10:
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL, "the backup ended before it could be killed"
    at_kill = sum(o.relpath.startswith("objects/") for o in store.iter_objects())
    assert 10 <= at_kill < total
    assert store.head(MANIFEST_NAME) is None  # killed before its first checkpoint

    again = invoke_cli("backup", s3_url, "--json")
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout.splitlines()[-1])
    assert s["adopted"] == at_kill and s["copied"] == total - at_kill and s["instances"] == total
    check = invoke_cli("verify", "--backup", s3_url)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_versioned_bucket_is_detected_and_reported(archive: Archive, s3_url: str, s3_store: Any) -> None:
    archive.close()
    bucket = s3_url.removeprefix("s3://").split("/")[0]
    s3_store.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    result = invoke_cli("backup", s3_url, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["versioning"], summary["object_lock"], summary["worm"]) == ("Enabled", False, False)
    assert "neither versioning nor Object Lock" not in result.stderr
    text = invoke_cli("backup", s3_url)
    assert "keeps old versions" in text.stdout + text.stderr


def test_an_unreachable_store_is_exit_4_in_one_line(archive: Archive, s3_url: str) -> None:
    archive.close()
    result = invoke_cli("backup", s3_url, "--endpoint-url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 4
    assert result.stderr.startswith("error: ") and "cannot reach the store" in result.stderr
    assert "Traceback" not in result.stderr
