"""STOW-RS against a real `pacsctl serve --web-port`: dicomweb-client stores, and bad input
(malformed multipart, parts that are not DICOM, bodies over --web-max-body, a client gone
half-way) gets a clear 4xx, stores nothing half-way, and the node keeps serving DIMSE and HTTP."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from benchmarks.corpus import make_ct
from pacsctl.archive.archive import Archive
from tests.helpers import invoke_cli
from tests.web.conftest import WebNode, fill_archive, start_web_node

MAX_BODY = 512 * 1024


@pytest.fixture(scope="module")
def stow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    base = tmp_path_factory.mktemp("stow")
    archive = base / "archive"
    uids = fill_archive(archive, base / "input")
    node = start_web_node(archive, base / "logs", "--web-max-body", str(MAX_BODY))
    node.uids = uids
    yield node
    assert node.serve.stop(timeout=20) == 0, node.serve.stderr()[-2000:]


def _cts(folder: Path, count: int, study: str | None = None, **fields: object) -> list[Path]:
    study = study or generate_uid()
    series = generate_uid()
    return [make_ct(folder / f"{uuid.uuid4().hex}.dcm", study_uid=study, series_uid=series,
                    instance_number=i + 1, pixel_seed=i, **fields) for i in range(count)]  # type: ignore[arg-type]


def _multipart(parts: list[bytes], boundary: str = "b0undary", types: list[str] | None = None) -> bytes:
    body = b""
    for i, data in enumerate(parts):
        kind = (types or [])[i] if types and i < len(types) else "application/dicom"
        body += f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


def _post(node: WebNode, body: bytes, path: str = "/studies", boundary: str = "b0undary",
          token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or node.token('--write')}",
               "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    return httpx.post(node.dicomweb + path, content=body, headers=headers, timeout=60)


def _archived(node: WebNode, sop_uid: str) -> bool:
    return (node.archive / Archive.object_relpath(sop_uid)).exists()


def _tmp_files(node: WebNode) -> list[Path]:
    return [p for p in (node.archive / "tmp").iterdir() if p.suffix == ".part"]


def _node_answers_dimse_and_http(node: WebNode) -> None:
    ae = AE(ae_title="CHECK")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", node.serve.port, ae_title=node.serve.aet)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    assert node.client().search_for_studies()


def test_stow_stores_every_part_durably_and_answers_per_instance(stow_node: WebNode, tmp_path: Path) -> None:
    paths = _cts(tmp_path, 3)
    datasets = [pydicom.dcmread(p) for p in paths]
    client = stow_node.client(stow_node.token("--write"))
    answer = client.store_instances(datasets)
    referenced = {item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence}
    assert referenced == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in answer
    for path, ds in zip(paths, datasets, strict=True):
        assert (stow_node.archive / Archive.object_relpath(ds.SOPInstanceUID)).read_bytes() == path.read_bytes()
    study = datasets[0].StudyInstanceUID
    assert len(client.search_for_instances(study)) == 3 and len(client.retrieve_study(study)) == 3
    # the same again: duplicates are stored already (referenced, nothing new written)
    again = client.store_instances(datasets, study_instance_uid=study)
    assert len(again.ReferencedSOPSequence) == 3
    assert _tmp_files(stow_node) == []


def test_a_read_only_token_cannot_store_and_a_scoped_one_only_into_its_scope(
    stow_node: WebNode, tmp_path: Path
) -> None:
    body = _multipart([_cts(tmp_path, 1)[0].read_bytes()])
    answer = _post(stow_node, body, token=stow_node.token())
    assert answer.status_code == 403 and answer.json()["error"]
    s2 = stow_node.uids["S2"]
    scoped = stow_node.token("--write", "--study", s2)
    inside, outside = _cts(tmp_path, 1, study=s2, patient_id="PB")[0], _cts(tmp_path, 1)[0]
    answer = _post(stow_node, _multipart([inside.read_bytes(), outside.read_bytes()]), token=scoped)
    assert answer.status_code == 202
    result = pydicom.Dataset.from_json(answer.json())
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [pydicom.dcmread(inside).SOPInstanceUID]
    assert [i.FailureReason for i in result.FailedSOPSequence] == [0xA900]
    assert not _archived(stow_node, pydicom.dcmread(outside).SOPInstanceUID)


def test_parts_that_are_not_dicom_fail_alone_and_a_request_storing_nothing_is_never_200(
    stow_node: WebNode, tmp_path: Path
) -> None:
    good = _cts(tmp_path, 2)
    body = _multipart([good[0].read_bytes(), b"this is not DICOM at all" * 20, good[1].read_bytes()])
    answer = _post(stow_node, body)
    assert answer.status_code == 202
    result = pydicom.Dataset.from_json(answer.json())
    assert {i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence} == {
        pydicom.dcmread(p).SOPInstanceUID for p in good}
    assert [i.FailureReason for i in result.FailedSOPSequence] == [0xC000]
    nothing = _post(stow_node, _multipart([b"junk" * 100, b"\x00" * 300]))
    assert nothing.status_code == 409
    assert len(pydicom.Dataset.from_json(nothing.json()).FailedSOPSequence) == 2
    wrong_type = _post(stow_node, _multipart([good[0].read_bytes()], types=["image/jpeg"]))
    assert wrong_type.status_code == 409
    # an instance of another study than the path's: refused, not stored
    other = _cts(tmp_path, 1)[0]
    target = stow_node.uids["S2"]
    refused = _post(stow_node, _multipart([other.read_bytes()]), path=f"/studies/{target}")
    assert refused.status_code == 409
    assert pydicom.Dataset.from_json(refused.json()).FailedSOPSequence[0].FailureReason == 0xA900
    assert not _archived(stow_node, pydicom.dcmread(other).SOPInstanceUID)
    assert _tmp_files(stow_node) == []


def test_malformed_bodies_and_too_large_ones_store_nothing(stow_node: WebNode, tmp_path: Path) -> None:
    paths = _cts(tmp_path, 2)
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    complete = _multipart([p.read_bytes() for p in paths])
    truncated = complete[: -len("--b0undary--\r\n") - 10]  # no closing boundary
    for body, status in ((truncated, 400), (b"no multipart here", 400), (b"", 400)):
        answer = _post(stow_node, body)
        assert answer.status_code == status and answer.json()["error"]
    plain = httpx.post(stow_node.dicomweb + "/studies", content=complete, headers={
        "Authorization": f"Bearer {stow_node.token('--write')}", "Content-Type": "application/dicom"})
    assert plain.status_code == 415
    big = _multipart([paths[0].read_bytes(), b"\x00" * MAX_BODY])
    assert _post(stow_node, big).status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[: len(big) // 2]
        yield big[len(big) // 2 :]

    answer = httpx.post(stow_node.dicomweb + "/studies", content=chunked(), headers={
        "Authorization": f"Bearer {stow_node.token('--write')}",
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'})
    assert answer.status_code == 413
    assert not any(_archived(stow_node, uid) for uid in uids)
    assert _tmp_files(stow_node) == []
    _node_answers_dimse_and_http(stow_node)


def test_a_client_gone_half_way_leaves_nothing_behind(stow_node: WebNode, tmp_path: Path) -> None:
    paths = _cts(tmp_path, 3)
    uids = [pydicom.dcmread(p).SOPInstanceUID for p in paths]
    body = _multipart([p.read_bytes() for p in paths])
    host, port = stow_node.url.removeprefix("http://").split(":")
    created = json.loads(invoke_cli("--archive", stow_node.archive, "token", "create", "--write",
                                    "--json").stdout)
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {created['token']}\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=b0undary\r\n'
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body[: len(body) * 2 // 3])  # two whole parts and some of the third
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while _tmp_files(stow_node) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _tmp_files(stow_node) == []
    assert not any(_archived(stow_node, uid) for uid in uids)
    _node_answers_dimse_and_http(stow_node)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # audited once the server has seen the disconnect
        mine = [json.loads(line) for line in (stow_node.archive / "audit.log").read_text().splitlines()
                if created["id"] in line]
        if mine:
            break
        time.sleep(0.05)
    assert [(r["status"], "disconnected" in r["reason"]) for r in mine] == [("400", True)]
