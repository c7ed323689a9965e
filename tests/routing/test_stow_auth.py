"""DICOMweb routes with credentials, against a real `pacsctl serve --web-port` (STOW-RS behind
bearer tokens): held while the token is missing, wrong or unreadable (HTTP 401 / the file),
delivered once it is right, each instance once, without `route add` again; the secret never in
`route list`, `route status` or the forwarder's log."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacsctl.archive.archive import Archive
from pacsctl.config import Config, parse_node_spec
from pacsctl.remote.send import SendItem, send
from pacsctl.routing.destinations import DownCause
from pacsctl.routing.forwarder import run_once
from pacsctl.routing.queue import RouteQueue
from pacsctl.routing.routes import add_route, route_status
from tests.helpers import invoke_cli
from tests.web.conftest import WebNode, fill_archive, start_web_node


@pytest.fixture(scope="module")
def web_dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    """One destination pacsctl (DICOMweb with STOW) per module."""
    base = tmp_path_factory.mktemp("stow-dest")
    archive = base / "archive"
    fill_archive(archive, base / "input")
    node = start_web_node(archive, base / "logs")
    yield node
    assert node.serve.stop(timeout=20) == 0, node.serve.stderr()[-2000:]


def _token(node: WebNode, *args: str) -> tuple[str, str]:
    """A new write token on the destination: (its secret, its id)."""
    result = invoke_cli("--archive", node.archive, "token", "create", "--write", *args, "--json")
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    return str(created["token"]), str(created["id"])


def _write_secret(path: Path, secret: str) -> Path:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def _stored_by(node: WebNode, token_id: str) -> int:
    """How many instances the destination stored from requests with this token (its audit)."""
    result = invoke_cli("--archive", node.archive, "audit", "--event", "web", "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return sum(int(r.get("stored", 0)) for r in records if r.get("token") == token_id)


def _import(archive: Path, files: list[Path]) -> None:
    result = invoke_cli("--archive", archive, "import", *files, "--jobs", "1")
    assert result.returncode == 0, result.stderr


def _status(archive: Path) -> dict:
    with Archive.open(archive) as opened:
        return route_status(opened)[0][0]


def test_bearer_route_is_held_without_a_token_and_delivers_each_instance_once_with_one(
    web_dest: WebNode, archive_dir: Path, ct_factory, tmp_path: Path
) -> None:
    files = ct_factory.series(3)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "web", web_dest.dicomweb, max_backoff=1.0)
    _import(archive_dir, files)

    [report] = run_once(archive_dir)
    assert (report.delivered, report.pending, report.dead) == (0, 3, 0)
    assert report.down_cause is DownCause.AUTH
    assert "authentication refused (HTTP 401)" in report.down
    row = _status(archive_dir)
    assert (row["pending"], row["dead"], row["down_cause"]) == (3, 0, "auth")

    secret, token_id = _token(web_dest)
    token_file = _write_secret(tmp_path / "token", secret)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "web", web_dest.dicomweb, max_backoff=1.0, replace=True, token_file=token_file)
    [report] = run_once(archive_dir)
    assert (report.delivered, report.pending, report.dead, report.down) == (3, 0, 0, "")
    assert _stored_by(web_dest, token_id) == 3  # each instance in one STOW request, once
    sent = _outbox_uids(archive_dir)
    assert len(sent) == 3
    for uid in sent:  # in the destination's archive
        assert (web_dest.archive / Archive.object_relpath(uid)).exists()
    [again] = run_once(archive_dir)
    assert (again.delivered, again.pending) == (0, 0)
    assert _stored_by(web_dest, token_id) == 3
    row = _status(archive_dir)
    assert (row["delivered"], row["pending"], row["down"], row["down_cause"]) == (3, 0, "", None)


def _outbox_uids(archive: Path) -> set[str]:
    queue = RouteQueue(archive, "web")
    queue.refresh()
    return {e.sop_instance_uid for e in queue.entries.values()}


def test_a_wrong_or_unreadable_token_holds_the_queue_and_fixing_the_file_delivers(
    web_dest: WebNode, archive_dir: Path, ct_factory, tmp_path: Path
) -> None:
    wrong = "wrong-" + os.urandom(12).hex()
    token_file = _write_secret(tmp_path / "token", wrong)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "web", web_dest.dicomweb, max_backoff=1.0, token_file=token_file)
    _import(archive_dir, ct_factory.series(2))

    result = invoke_cli("--archive", archive_dir, "-v", "route", "run", "--once", "--json")
    assert result.returncode == 4, result.stderr  # a destination not reached
    assert "authentication refused (HTTP 401)" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["down_cause"] == "auth" and records[-1]["pending"] == 2
    listed = invoke_cli("--archive", archive_dir, "route", "list", "--json")
    status = invoke_cli("--archive", archive_dir, "route", "status", "--json")
    [route] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (route["auth"], route["token_file"]) == ("bearer", str(token_file))
    for text in (result.stdout, result.stderr, listed.stdout, status.stdout, status.stderr):
        assert wrong not in text
    row = json.loads(status.stdout.splitlines()[0])
    assert (row["pending"], row["auth"], row["auth_file"]) == (2, "bearer", str(token_file))

    token_file.unlink()  # unreadable: down too, nothing counted against the instances
    [report] = run_once(archive_dir)
    assert report.down_cause is DownCause.SECRET and str(token_file) in report.down
    row = _status(archive_dir)
    assert (row["pending"], row["dead"], row["failing"]) == (2, 0, 0)

    secret, token_id = _token(web_dest)
    _write_secret(token_file, secret)  # the token rotated in place: no `route add` again
    [report] = run_once(archive_dir)
    assert (report.delivered, report.pending, report.dead) == (2, 0, 0)
    assert _stored_by(web_dest, token_id) == 2
    for text in (invoke_cli("--archive", archive_dir, "route", "list", "--json").stdout,
                 invoke_cli("--archive", archive_dir, "route", "status", "--json").stdout):
        assert secret not in text
    assert secret not in (archive_dir / "pacsctl.toml").read_text()


def test_the_stow_answer_still_decides_what_was_delivered(
    web_dest: WebNode, archive_dir: Path, ct_factory, tmp_path: Path
) -> None:
    # A token that may store only into another study: the server answers (409) naming each
    # instance in its Failed SOP Sequence; none is in the Referenced SOP Sequence, none delivered.
    secret, _ = _token(web_dest, "--study", "1.2.3.999")
    with Archive.open(archive_dir) as archive:
        add_route(archive, "web", web_dest.dicomweb, max_attempts=1,
                  token_file=_write_secret(tmp_path / "token", secret))
    _import(archive_dir, ct_factory.series(2))
    [report] = run_once(archive_dir)
    assert (report.delivered, report.refused, report.dead, report.down) == (0, 2, 2, "")
    with Archive.open(archive_dir) as archive:
        dead = route_status(archive)[1]
    assert len(dead) == 2 and all("not in the STOW response" not in d["reason"] for d in dead)


def test_credentials_are_checked_when_the_route_is_added(archive_dir: Path, tmp_path: Path) -> None:
    token = _write_secret(tmp_path / "token", "t0ken")
    password = _write_secret(tmp_path / "password", "pa55")
    url = "http://127.0.0.1:9/dicom-web"
    cases = [
        (["--to", "NODE@127.0.0.1:104", "--token-file", token], "go with a DICOMweb"),
        (["--to", url, "--token-file", token, "--user", "u", "--password-file", password], "excludes"),
        (["--to", url, "--user", "u"], "go together"),
        (["--to", url, "--token-file", tmp_path / "missing"], "cannot read the secret file"),
        (["--to", "http://u:pa55@127.0.0.1:9/dicom-web"], "credentials in it"),
    ]
    for args, message in cases:
        result = invoke_cli("--archive", archive_dir, "route", "add", "r", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "pa55" not in result.stderr
    result = invoke_cli("--archive", archive_dir, "route", "add", "r", "--to", url,
                        "--user", "alice", "--password-file", password)
    assert result.returncode == 0, result.stderr
    assert "other users" not in result.stderr
    token.chmod(0o644)
    result = invoke_cli("--archive", archive_dir, "route", "add", "t", "--to", url, "--token-file", token)
    assert result.returncode == 0 and f"{token} can be read by other users" in result.stderr
    listed = invoke_cli("--archive", archive_dir, "route", "list")
    assert "basic" in listed.stdout and "pa55" not in listed.stdout
    config = (archive_dir / "pacsctl.toml").read_text()
    assert str(password) in config and "pa55" not in config


def _wait_for(condition, timeout: float = 60.0) -> None:  # noqa: ANN001 - a callable
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_serves_forwarder_holds_on_a_refused_token_never_logs_it_and_takes_the_rotated_one(
    web_dest: WebNode, archive_dir: Path, ct_factory, serve_factory, tmp_path: Path
) -> None:
    wrong = "wrong-" + os.urandom(12).hex()
    token_file = _write_secret(tmp_path / "token", wrong)
    with Archive.open(archive_dir) as archive:
        add_route(archive, "web", web_dest.dicomweb, max_backoff=1.0, token_file=token_file)
    server = serve_factory(archive_dir)
    files = ct_factory.series(3)
    node = parse_node_spec(f"{server.aet}@127.0.0.1:{server.port}", Config())
    assert send(node, [SendItem(str(p), p.stat().st_size) for p in files], "MODALITY").sent == 3

    _wait_for(lambda: _status(archive_dir)["down_cause"] == "auth")
    row = _status(archive_dir)
    assert (row["pending"], row["dead"]) == (3, 0)
    assert "authentication refused (HTTP 401)" in row["down"]

    secret, token_id = _token(web_dest)
    _write_secret(token_file, secret)  # rotated in place, serve not told
    _wait_for(lambda: _status(archive_dir)["delivered"] == 3)
    assert server.stop() == 0
    assert _stored_by(web_dest, token_id) == 3
    log = server.stderr()
    assert "authentication refused (HTTP 401)" in log  # the forwarder did log the refusal ...
    assert wrong not in log and secret not in log  # ... and neither token
