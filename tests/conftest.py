"""Fixtures shared by the whole suite (the plain helpers live in `tests/helpers.py`).

- `free_port`: a free loopback TCP port.
- `testdata_dir`, `dicom_test_files`, `all_dicom_test_files`, `broken_dicom_files`: pydicom's
  real test files.
- `archive_dir`: a fresh archive path in tmp, exported as PACSCTL_ARCHIVE.
- `ct_factory`: writes small valid CT files.
- `cli`: `run_cli` (``python -m pacsctl ...`` in a subprocess).
- `serve_factory`: starts ``pacsctl serve`` on a free loopback port, stopped at teardown.
- `s3_store` (session), `s3_url`: a real S3 store (Swift, tests/s3server.py); a fresh bucket
  per test as ``s3://BUCKET/PREFIX`` with the AWS_* variables set (tests using it are `interop`).

Every test also gets private XDG folders and no inherited PACSCTL_ARCHIVE, so nothing a test
does can touch the real user's archive or config.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from benchmarks.corpus import make_ct
from tests.helpers import (
    TESTDATA_DIR,
    ServeProcess,
    TestFile,
    broken_test_files,
    free_port as _free_port,
    missing_peer,
    readable_test_files,
    run_cli,
    start_serve,
    unique_test_files,
)
from tests.s3server import S3ServerError, SwiftS3


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Point platformdirs at temp folders and drop any PACSCTL_ARCHIVE from the caller's env."""
    home = tmp_path_factory.mktemp("xdg")
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.delenv("PACSCTL_ARCHIVE", raising=False)


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return _free_port()


@pytest.fixture(scope="session")
def testdata_dir() -> Path:
    """pydicom's bundled test files (``pydicom/data/test_files``); read-only, never modify."""
    return TESTDATA_DIR


@pytest.fixture(scope="session")
def dicom_test_files() -> list[Path]:
    """Readable, valid Part-10 test files, one per SOP Instance UID (no DICOMDIR, no broken)."""
    return unique_test_files()


@pytest.fixture(scope="session")
def all_dicom_test_files() -> tuple[TestFile, ...]:
    """Every valid test file with its UIDs and transfer syntax; SOP Instance UIDs may repeat."""
    return readable_test_files()


@pytest.fixture(scope="session")
def broken_dicom_files() -> list[Path]:
    """pydicom's deliberately truncated files (a DICOM reader should quarantine them)."""
    return broken_test_files()


@pytest.fixture
def archive_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh archive path (not created yet) exported as PACSCTL_ARCHIVE for this test."""
    path = tmp_path / "archive"
    monkeypatch.setenv("PACSCTL_ARCHIVE", str(path))
    return path


class CTFactory:
    """Writes small CT Part-10 files into a temp folder; see `benchmarks.corpus.make_ct`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._counter = 0

    def __call__(self, name: str | None = None, *, directory: Path | None = None,
                 **fields: Any) -> Path:
        """Write one CT file (name defaults to ``ct{n}.dcm``); `fields` go to `make_ct`."""
        self._counter += 1
        target = (directory or self.directory) / (name or f"ct{self._counter:05d}.dcm")
        return make_ct(target, **fields)

    def series(self, count: int, *, directory: Path | None = None, **fields: Any) -> list[Path]:
        """Write `count` instances of one series (shared study/series UIDs, numbered 1..count)."""
        fields.setdefault("study_uid", generate_uid())
        fields.setdefault("series_uid", generate_uid())
        return [self(directory=directory, instance_number=i + 1, pixel_seed=i, **fields)
                for i in range(count)]


@pytest.fixture
def ct_factory(tmp_path: Path) -> CTFactory:
    """Callable writing small valid CT files (64x64 by default) under ``tmp_path/ct``.

    ``ct_factory(patient_id="P1", study_uid=..., series_uid=..., sop_uid=..., rows=..)`` ->
    Path; ``ct_factory.series(5, patient_id="P1")`` -> five instances of one new series.
    """
    return CTFactory(tmp_path / "ct")


@pytest.fixture
def cli() -> Callable[..., Any]:
    """`tests.helpers.run_cli`: ``cli("ls", "--json")`` -> CompletedProcess (text)."""
    return run_cli



@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start ``pacsctl serve`` on 127.0.0.1 and a free port; every one is stopped at teardown.

    ``srv = serve_factory(archive_dir, "--allow", "SCU", aet="PACSCTL", env={...})`` ->
    `ServeProcess` with ``.port``, ``.aet``, ``.archive``, ``.stop()`` (SIGTERM, returns the
    exit code), ``.kill()`` (SIGKILL) and ``.stderr()``.
    """
    started: list[ServeProcess] = []

    def start(archive: Path, *args: str, aet: str = "PACSCTL",
              env: dict[str, str] | None = None, timeout: float = 30) -> ServeProcess:
        server = start_serve(archive, tmp_path / "serve-logs", *args, aet=aet, env=env,
                             timeout=timeout)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=10)


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwiftS3]:
    """One real S3 store (OpenStack Swift on loopback) for the whole session (5-10 s to start)."""
    store = SwiftS3(tmp_path_factory.mktemp("swift"))
    try:
        store.start()
    except S3ServerError as exc:
        missing_peer(str(exc))
    yield store
    store.stop()


@pytest.fixture
def s3_url(s3_store: SwiftS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://BUCKET/backup``: a new bucket of the session's store, AWS_* variables set for it."""
    for key, value in s3_store.env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)  # the machine's ~/.aws must not matter
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    bucket = s3_store.make_bucket(f"t{uuid.uuid4().hex[:12]}")
    return f"s3://{bucket}/backup"
