"""A real `pacsctl serve --web-port` over a small archive, started once per module.

    def test_x(web_node):          # web_node.url (http://127.0.0.1:PORT), .token(...), .client(...)
        web_node.client().search_for_studies()

The archive holds three studies: S1 (patient PA, two series of 3 and 2 CT instances), S2
(patient PB, one series of 2), S3 (patient PA, an MR series of 1, dated 2023).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from benchmarks.corpus import make_ct
from tests.helpers import ServeProcess, invoke_cli, start_serve

_WEB_LINE = re.compile(r"DICOMweb on (https?)://([0-9.]+):(\d+)/dicom-web")


@dataclass
class WebNode:
    """A running serve with its web side; the UIDs of what its archive holds."""

    serve: ServeProcess
    url: str
    archive: Path
    uids: dict[str, Any] = field(default_factory=dict)

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def token(self, *args: str) -> str:
        """A new token (`token create ARGS --json`): its secret."""
        result = invoke_cli("--archive", self.archive, "token", "create", *args, "--json")
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["token"])

    def client(self, token: str | None = None) -> Any:
        """A dicomweb-client DICOMwebClient with a Bearer token (a new full one by default)."""
        from dicomweb_client.api import DICOMwebClient

        secret = token or self.token()
        return DICOMwebClient(self.dicomweb, headers={"Authorization": f"Bearer {secret}"})


def start_web_node(archive: Path, log_dir: Path, *args: str, timeout: float = 30) -> WebNode:
    """`pacsctl serve --web-port 0` on loopback; waits until the web side says where it is and
    answers (401 without a token)."""
    import httpx

    serve = start_serve(archive, log_dir, "--workers", "1", "--web-port", "0", *args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _WEB_LINE.search(serve.stderr())
        if found:
            url = f"{found[1]}://{found[2]}:{found[3]}"
            try:
                httpx.get(url + "/dicom-web/studies", timeout=5, verify=False)
                return WebNode(serve, url, archive)
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    serve.stop()
    raise AssertionError(f"the web side did not start:\n{serve.stderr()[-2000:]}")


def fill_archive(archive: Path, folder: Path) -> dict[str, Any]:
    """Write and import the three studies; their UIDs by name."""
    uids: dict[str, Any] = {"S1": generate_uid(), "S2": generate_uid(), "S3": generate_uid()}
    uids["S1a"], uids["S1b"], uids["S2a"], uids["S3a"] = (generate_uid() for _ in range(4))
    plan = [
        ("S1", "S1a", 3, "PA", "DOE^JANE", "20240101", "CT"),
        ("S1", "S1b", 2, "PA", "DOE^JANE", "20240101", "CT"),
        ("S2", "S2a", 2, "PB", "ROE^RICHARD", "20240315", "CT"),
        ("S3", "S3a", 1, "PA", "DOE^JANE", "20230505", "MR"),
    ]
    for study, series, count, pid, name, date, modality in plan:
        for i in range(count):
            make_ct(
                folder / f"{series}-{i}.dcm",
                patient_id=pid,
                patient_name=name,
                study_uid=uids[study],
                series_uid=uids[series],
                instance_number=i + 1,
                series_number=1 if series.endswith("a") else 2,
                study_date=date,
                pixel_seed=i,
                extra={"Modality": modality},
            )
    result = invoke_cli("--archive", archive, "import", folder)
    assert result.returncode == 0, result.stderr
    return uids


@pytest.fixture(scope="module")
def web_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    """One serve with its web side per module, over the three-study archive."""
    base = tmp_path_factory.mktemp("web")
    archive = base / "archive"
    uids = fill_archive(archive, base / "input")
    node = start_web_node(archive, base / "logs")
    node.uids = uids
    yield node
    assert node.serve.stop(timeout=20) == 0, node.serve.stderr()[-2000:]
