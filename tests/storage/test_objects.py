"""storage/objects against a real S3 store (OpenStack Swift on loopback): puts single and
multipart with their SHA-256 in metadata, get, head, list, delete, typed failures."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pacsctl.errors import EXIT_ERROR, EXIT_NETWORK, UsageError
from pacsctl.storage.objects import (
    MIN_PART_SIZE,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreFailure,
    ObjectURL,
)
from tests.helpers import free_port

pytestmark = pytest.mark.interop


def test_urls_parse_into_bucket_and_prefix() -> None:
    url = ObjectURL.parse("s3://bucket/some/prefix/")
    assert (url.bucket, url.prefix) == ("bucket", "some/prefix")
    assert url.key("objects/a.dcm") == "some/prefix/objects/a.dcm"
    assert url.relative("some/prefix/objects/a.dcm") == "objects/a.dcm"
    assert ObjectURL.parse("s3://bucket").key("x") == "x"
    with pytest.raises(UsageError):
        ObjectURL.parse("/a/folder")
    with pytest.raises(UsageError):
        ObjectURL.parse("s3:///prefix")


def test_put_head_get_list_delete(s3_url: str, tmp_path: Path) -> None:
    store = ObjectStore(s3_url)
    store.check_access()
    small = tmp_path / "small"
    small.write_bytes(b"a" * 1000)
    digest = hashlib.sha256(b"a" * 1000).hexdigest()
    result = store.put_file("objects/small", small, expected_sha256=digest)
    assert (result.size, result.sha256, result.parts) == (1000, digest, 1)
    store.put_bytes("manifest.ndjson", b"{}\n")

    info = store.head("objects/small")
    assert info is not None and (info.size, info.sha256) == (1000, digest)
    assert store.head("objects/none") is None
    assert store.get_bytes("objects/small") == b"a" * 1000
    assert sorted((o.relpath, o.size) for o in store.iter_objects()) == [
        ("manifest.ndjson", 3),
        ("objects/small", 1000),
    ]
    assert [o.relpath for o in store.iter_objects("objects/")] == ["objects/small"]
    assert [o.sha256 for o in store.list_with_metadata("objects/")] == [digest]

    store.delete(["objects/small", "objects/never-there"])
    assert store.head("objects/small") is None
    with pytest.raises(ObjectStoreError) as caught:
        store.get_bytes("objects/small")
    assert caught.value.failure is ObjectStoreFailure.NOT_FOUND


def test_a_large_file_goes_up_in_parts_with_the_whole_files_sha256(s3_url: str, tmp_path: Path) -> None:
    store = ObjectStore(s3_url, multipart_threshold=MIN_PART_SIZE, part_size=MIN_PART_SIZE)
    big = tmp_path / "big"
    data = os.urandom(2 * MIN_PART_SIZE + 123)
    big.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    result = store.put_file("objects/big", big, expected_sha256=digest)
    assert (result.parts, result.size, result.sha256) == (3, len(data), digest)
    info = store.head("objects/big")
    assert info is not None and info.sha256 == digest and info.size == len(data)
    assert info.etag.endswith("-3")  # a multipart ETag: not the MD5 of the bytes
    assert hashlib.sha256(b"".join(store.iter_chunks("objects/big"))).hexdigest() == digest


@pytest.mark.parametrize("threshold", [1 << 30, MIN_PART_SIZE])
def test_bytes_that_do_not_match_the_expected_hash_are_never_stored(
    s3_url: str, tmp_path: Path, threshold: int
) -> None:
    store = ObjectStore(s3_url, multipart_threshold=threshold, part_size=MIN_PART_SIZE)
    path = tmp_path / "f"
    path.write_bytes(b"b" * (MIN_PART_SIZE + 1))
    with pytest.raises(ObjectStoreError) as caught:
        store.put_file("objects/f", path, expected_sha256="0" * 64)
    assert caught.value.failure is ObjectStoreFailure.CONTENT
    assert store.head("objects/f") is None


def test_a_wrong_secret_is_an_auth_failure_that_names_no_credential(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = ObjectStore(s3_url)
    for attempt in (store.check_access, lambda: store.put_bytes("x", b"x"), lambda: list(store.iter_objects())):
        with pytest.raises(ObjectStoreError) as caught:
            attempt()
        assert caught.value.failure is ObjectStoreFailure.AUTH and caught.value.exit_code == EXIT_ERROR
        text = f"{caught.value} {caught.value.hint}"
        assert "not-the-secret" not in text and "test:tester" not in text


def test_a_missing_bucket_and_an_unreachable_endpoint_are_typed(s3_url: str) -> None:
    with pytest.raises(ObjectStoreError) as caught:
        ObjectStore("s3://no-such-bucket-here/x").check_access()
    assert caught.value.failure is ObjectStoreFailure.NO_BUCKET
    with pytest.raises(ObjectStoreError) as caught:
        ObjectStore(s3_url, endpoint_url=f"http://127.0.0.1:{free_port()}").check_access()
    assert caught.value.failure is ObjectStoreFailure.NETWORK and caught.value.exit_code == EXIT_NETWORK


def test_endpoint_from_the_environment_and_path_style(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ObjectStore(s3_url)  # AWS_ENDPOINT_URL from the fixture
    assert store._client.meta.endpoint_url.startswith("http://127.0.0.1:")
    assert store._client.meta.config.s3["addressing_style"] == "path"
    store.check_access()


def test_protection_reports_versioning_and_object_lock(s3_url: str) -> None:
    protection = ObjectStore(s3_url).protection()
    assert protection.versioning in ("", "Enabled", "Suspended")
    assert not protection.worm  # Swift's S3 API has no object lock
    assert "object lock" in protection.describe()


def test_a_profile_from_the_aws_config_files_gives_endpoint_and_keys(
    s3_url: str, s3_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    config, credentials = tmp_path / "config", tmp_path / "credentials"
    config.write_text(f"[profile offsite]\nregion = us-east-1\nendpoint_url = {s3_store.endpoint}\n")
    credentials.write_text("[offsite]\naws_access_key_id = test:tester\naws_secret_access_key = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "offsite")
    store = ObjectStore(s3_url)
    assert store._client.meta.config.s3["addressing_style"] == "path"  # a custom endpoint
    store.check_access()
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ObjectStoreError) as caught:
        ObjectStore(s3_url)
    assert caught.value.failure is ObjectStoreFailure.AUTH


def test_debug_logging_never_shows_the_credentials(s3_url: str, tmp_path: Path) -> None:
    from tests.helpers import invoke_cli

    result = invoke_cli("-vv", "--archive", tmp_path / "none", "verify", "--backup", s3_url)
    assert result.returncode in (1, 2)  # no manifest: not a backup
    assert "error: " in result.stderr
    assert "test:tester" not in result.stderr and "Credential=" not in result.stderr
