"""The web side as a library (`pacsctl.web.server.run_web` in a thread, no `serve` process):
HTTPS with --web-tls-cert/--web-tls-key, token expiry, and a slow STOW body cut off (408)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.corpus import make_ct
from pacsctl.web.app import WebOptions
from pacsctl.web.server import bind_web_socket, run_web
from pacsctl.web.tokens import TokenStore, parse_expiry
from tests.helpers import invoke_cli


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("weblib")
    make_ct(base / "in" / "one.dcm", patient_id="PL")
    assert invoke_cli("--archive", base / "archive", "import", base / "in").returncode == 0
    return base / "archive"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=web-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
        "-out", "server.csr")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", "server.pem", "-extfile", "server.ext")
    return {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}


def _serving(archive: Path, options: WebOptions) -> Iterator[str]:
    sock = bind_web_socket(options)
    port = sock.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(target=run_web, args=(archive, options, sock, stop.wait), daemon=True)
    thread.start()
    scheme = "https" if options.tls_cert else "http"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"{scheme}://127.0.0.1:{port}"
    stop.set()
    thread.join(20)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def https_url(archive: Path, certs: dict[str, Path]) -> Iterator[str]:
    yield from _serving(archive, WebOptions(tls_cert=str(certs["cert"]), tls_key=str(certs["key"])))


@pytest.fixture(scope="module")
def impatient_url(archive: Path) -> Iterator[str]:
    yield from _serving(archive, WebOptions(request_timeout=1.0))


def test_https_serves_with_the_certificate_and_refuses_plain_http(
    archive: Path, certs: dict[str, Path], https_url: str
) -> None:
    token = TokenStore(archive).create(parse_expiry("10m")).secret
    context = ssl.create_default_context(cafile=str(certs["ca"]))  # the name and chain checked
    answer = httpx.get(https_url + "/dicom-web/studies", verify=context,
                       headers={"Authorization": f"Bearer {token}"})
    assert [s["00100020"]["Value"] for s in answer.json()] == [["PL"]]
    with pytest.raises(httpx.HTTPError):
        httpx.get(https_url.replace("https", "http") + "/dicom-web/studies", timeout=5)
    with pytest.raises(httpx.ConnectError):  # not our CA: refused by the client
        httpx.get(https_url + "/dicom-web/studies", timeout=5)
    assert httpx.get(https_url + "/dicom-web/studies", verify=context).status_code == 401


def test_an_expired_token_is_refused(archive: Path, impatient_url: str) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    issued = TokenStore(archive).create(soon)
    headers = {"Authorization": f"Bearer {issued.secret}"}
    assert httpx.get(impatient_url + "/dicom-web/studies", headers=headers).status_code == 200
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.1)
    answer = httpx.get(impatient_url + "/dicom-web/studies", headers=headers)
    assert answer.status_code == 401 and "expired" in answer.json()["error"]


def test_a_stow_body_slower_than_the_request_time_limit_gets_408(archive: Path, impatient_url: str) -> None:
    token = TokenStore(archive).create(parse_expiry("10m"), write=True).secret
    host, port = impatient_url.removeprefix("http://").split(":")
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
            "Content-Length: 100000\r\n\r\n--b\r\nContent-Type: application/dicom\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        started = time.monotonic()
        answer = sock.recv(4096)  # nothing more is sent: the server gives up after 1 s
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert 0.5 < time.monotonic() - started < 8
    assert not [p for p in (archive / "tmp").iterdir() if p.suffix == ".part"]
