"""A route to a bucket of a real S3 store (OpenStack Swift on loopback, `s3_store`)."""

from __future__ import annotations

import hashlib

import pytest

from pacsctl.archive.archive import Archive
from pacsctl.routing.forwarder import run_once
from pacsctl.routing.routes import add_route, route_status
from pacsctl.storage.objects import ObjectStore
from tests.helpers import invoke_cli
from tests.s3server import SECRET_KEY

pytestmark = pytest.mark.interop


def test_instances_go_to_the_bucket_with_their_sha256(archive_dir, ct_factory, s3_url, monkeypatch):
    files = ct_factory.series(3)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "bucket", s3_url + "/forwarded")
    assert invoke_cli("--archive", archive_dir, "import", *files, "--jobs", "1").returncode == 0

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")  # a store that refuses: nothing is done
    report = run_once(archive_dir)[0]
    assert report.down and report.delivered == 0
    with Archive.open(archive_dir) as archive:
        assert route_status(archive)[0][0]["pending"] == 3

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)  # the store's own key again
    assert run_once(archive_dir)[0].delivered == 3
    store = ObjectStore(s3_url)
    objects = {o.relpath: o for o in store.list_with_metadata("forwarded")}
    assert len(objects) == 3
    wanted = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert {o.sha256 for o in objects.values()} == wanted
    assert run_once(archive_dir)[0].delivered == 0  # nothing twice
