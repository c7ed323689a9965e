"""The per-series metadata caches exist before the first /metadata request (warmed at start,
after STOW, by `reindex`), and an unsound cache file is rebuilt, never served."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from benchmarks.corpus import make_ct
from pacsctl.archive.archive import Archive
from pacsctl.web import metadata
from tests.helpers import invoke_cli
from tests.web.conftest import WebNode, fill_archive, start_web_node


@pytest.fixture(scope="module")
def warm_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    base = tmp_path_factory.mktemp("warm")
    archive = base / "archive"
    uids = fill_archive(archive, base / "input")
    node = start_web_node(archive, base / "logs")
    node.uids = uids
    yield node
    assert node.serve.stop(timeout=20) == 0, node.serve.stderr()[-2000:]


def _cache_files(archive: Path, series_uid: str) -> list[Path]:
    return sorted((archive / metadata.CACHE_DIR).glob(f"*/{series_uid}.*.json"))


def _wait_for_cache(archive: Path, series_uid: str, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in _cache_files(archive, series_uid) if metadata.read_checked(p) is not None]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no metadata cache of series {series_uid} after {timeout} s")


def _audited_metadata_requests(archive: Path) -> list[str]:
    log = archive / "audit.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [r["path"] for r in map(json.loads, lines) if r.get("event") == "web" and "metadata" in r["path"]]


def _sops(answer: httpx.Response) -> list[str]:
    return [h["00080018"]["Value"][0] for h in answer.json()]


def test_serve_warms_every_series_without_a_request(warm_node: WebNode) -> None:
    for name in ("S1a", "S1b", "S2a", "S3a"):
        path = _wait_for_cache(warm_node.archive, warm_node.uids[name])
        assert path.stat().st_mode & 0o077 == 0  # not world-readable, like everything archived
    assert _audited_metadata_requests(warm_node.archive) == []


def test_stow_warms_the_series_it_touched(warm_node: WebNode, tmp_path: Path) -> None:
    series = generate_uid()
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"n{i}.dcm")
        make_ct(
            paths[-1], study_uid=warm_node.uids["S2"], series_uid=series, instance_number=i + 1, pixel_seed=i
        )
    boundary = "b0undary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p.read_bytes() + b"\r\n"
            for p in paths
        )
        + f"--{boundary}--\r\n".encode()
    )
    answer = httpx.post(
        warm_node.dicomweb + "/studies",
        content=body,
        headers={
            "Authorization": f"Bearer {warm_node.token('--write')}",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    cached = metadata.read_checked(_wait_for_cache(warm_node.archive, series))
    assert cached is not None
    assert sorted(h["00080018"]["Value"][0] for h in json.loads(cached)) == sorted(
        str(pydicom.dcmread(p).SOPInstanceUID) for p in paths
    )
    assert _audited_metadata_requests(warm_node.archive) == []


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "garbage"])
def test_an_unsound_cache_file_is_rebuilt_not_served(warm_node: WebNode, damage: str) -> None:
    uids = warm_node.uids
    path = _wait_for_cache(warm_node.archive, uids["S1b"])
    url = f"{warm_node.dicomweb}/studies/{uids['S1']}/series/{uids['S1b']}/metadata"
    auth = {"Authorization": f"Bearer {warm_node.token()}"}
    good = httpx.get(url, headers=auth, timeout=30)
    assert good.status_code == 200 and len(_sops(good)) == 2
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "corrupted":  # same length, one value changed: still valid JSON
        path.write_bytes(raw.replace(b'"CT"', b'"XX"', 1))
    else:
        path.write_bytes(b"[]")
    again = httpx.get(url, headers=auth, timeout=30)
    assert again.status_code == 200
    assert again.content == good.content
    assert metadata.read_checked(path) is not None  # rebuilt in place


def test_reindex_rebuilds_the_caches_and_removes_stale_ones(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    uids = fill_archive(archive, tmp_path / "input")
    cache_dir = archive / metadata.CACHE_DIR
    stale = cache_dir / "ab" / f"{generate_uid()}.0123456789abcdef01234567.json"  # a series gone
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"[]")
    result = invoke_cli("--archive", archive, "reindex")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    for name in ("S1a", "S1b", "S2a", "S3a"):
        (path,) = _cache_files(archive, uids[name])
        body = metadata.read_checked(path)
        assert body is not None
        with Archive.open(archive, create=False) as opened:
            records = opened.index.instances(series_uids=[uids[name]])
        assert path.name == f"{uids[name]}.{metadata.series_key(records)}.json"
        assert len(json.loads(body)) == len(records)
