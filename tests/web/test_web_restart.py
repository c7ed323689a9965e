"""`serve --web-port` brings its web process back when it dies or hangs (real processes: a
`pacsctl serve` in a process group of its own, its web process found under the keeper; real
HTTP and C-ECHO on loopback)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.peers import wait_for_port
from pacsctl.config import Node
from pacsctl.net import scu
from pacsctl.node.sidecar import WEDGED_AFTER, restart_delay
from tests.helpers import cli_env, free_port, invoke_cli, serve_workers
from tests.web.conftest import fill_archive

_WEB_LINE = re.compile(r"DICOMweb on http://127\.0\.0\.1:(\d+)/dicom-web")
_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_node_outlives_its_test() -> Iterator[None]:
    yield
    while _STARTED:
        proc = _STARTED.pop()
        try:  # the whole group: the keeper and web process too
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The three-study archive and a token for it (shared by the serves of this module)."""
    base = tmp_path_factory.mktemp("webrestart")
    fill_archive(base / "archive", base / "input")
    result = invoke_cli("--archive", base / "archive", "token", "create", "--json")
    assert result.returncode == 0, result.stderr
    return base / "archive", str(json.loads(result.stdout)["token"])


class WebServe:
    """`pacsctl serve --workers 1 --web-port 0` in a process group of its own (as a terminal
    runs it); waits until DIMSE listens and the web side answers."""

    def __init__(self, archive: Path, log: Path, token: str) -> None:
        self.port = free_port()
        self.log = log
        self.token = token
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pacsctl", "--archive", str(archive), "serve", "--host",
                 "127.0.0.1", "--port", str(self.port), "--workers", "1", "--web-port", "0"],
                env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        _STARTED.append(self.proc)
        wait_for_port(self.port, 60, self.proc)
        deadline = time.monotonic() + 60
        while not (found := _WEB_LINE.search(self.stderr())):
            assert time.monotonic() < deadline, self.stderr()
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{found[1]}"
        self.web_pid = self.wait_for_web(exclude=set(), timeout=60)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def keeper(self) -> int:
        (keeper,) = serve_workers(self.proc.pid)  # one worker: serve's only child is the keeper
        return keeper

    def web(self) -> int | None:
        """The keeper's child (the web process) now, or None between two of them."""
        try:
            children = Path(f"/proc/{self.keeper()}/task/{self.keeper()}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def new_web(self, exclude: set[int], timeout: float) -> int:
        """The pid of a web process not in `exclude`, once there is one."""
        deadline = time.monotonic() + timeout
        while (pid := self.web()) is None or pid in exclude:
            assert time.monotonic() < deadline, f"no new web process\n{self.stderr()[-3000:]}"
            time.sleep(0.02)
        return pid

    def answers(self) -> bool:
        """The page and QIDO-RS (with the token) both answer 200, the three studies found."""
        try:
            page = httpx.get(self.url + "/", timeout=5)
            studies = httpx.get(self.url + "/dicom-web/studies", timeout=5,
                                headers={"Authorization": f"Bearer {self.token}"})
        except httpx.TransportError:
            return False
        return page.status_code == 200 and studies.status_code == 200 and len(studies.json()) == 3

    def wait_for_web(self, exclude: set[int], timeout: float) -> int:
        """A new web process (pid not in `exclude`) that answers on the same URL."""
        deadline = time.monotonic() + timeout
        pid = self.new_web(exclude, timeout)
        while not self.answers():
            assert time.monotonic() < deadline, f"the web side does not answer\n{self.stderr()[-3000:]}"
            time.sleep(0.05)
        return pid

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            return None


class Echoing:
    """C-ECHO the node every 0.1 s from a thread; counts answers and failures."""

    def __init__(self, port: int) -> None:
        self.node = Node("n", "PACSCTL", "127.0.0.1", port)
        self.answered = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                scu.echo(self.node, timeout=10)
                self.answered += 1
            except Exception as exc:
                self.failed.append(type(exc).__name__)
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)


def test_restart_delays_double_up_to_a_minute() -> None:
    """The first death restarts at once; each further quick one waits 1, 2, 4 ... 60 s."""
    assert [restart_delay(n) for n in range(10)] == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert restart_delay(10_000) == 60


def test_a_killed_web_process_comes_back_on_the_same_port(tmp_path, archive) -> None:
    """kill -9 the web process: a new one answers the page and QIDO-RS on the same URL with
    the same token, C-ECHO answered throughout; SIGHUP restarts nothing; SIGTERM: exit 0."""
    node = WebServe(archive[0], tmp_path / "serve.log", archive[1])
    echoing = Echoing(node.port)
    first = node.web_pid
    started = time.monotonic()
    os.kill(first, signal.SIGKILL)
    second = node.wait_for_web(exclude={first}, timeout=30)
    back_after = time.monotonic() - started
    assert f"web server (pid {first}) was killed by SIGKILL after" in node.stderr()
    assert "starting another\n" in node.stderr()  # the first death: at once, no back-off
    assert back_after < 30

    for pid in (node.proc.pid, node.keeper(), second):  # SIGHUP: settings reload, no restart
        os.kill(pid, signal.SIGHUP)
    time.sleep(1.0)
    assert node.web() == second and node.answers()
    echoing.stop()
    assert echoing.answered > 0 and not echoing.failed, echoing.failed

    node.proc.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0, node.stderr()[-3000:]
    assert node.stderr().count("starting another") == 1, node.stderr()[-3000:]


def test_a_web_process_that_keeps_dying_backs_off_and_serve_still_stops(tmp_path, archive) -> None:
    """Killed again and again (as a crash loop would), the web process comes back after 0,
    1, 2, 4 s (logged); DIMSE serves on; SIGTERM during a back-off stops serve at once (exit 0)
    and no web process is started during the stop."""
    node = WebServe(archive[0], tmp_path / "serve.log", archive[1])
    seen = {node.web_pid}
    killed_at = time.monotonic()
    os.kill(node.web_pid, signal.SIGKILL)
    for delay in (0, 1, 2):
        pid = node.new_web(seen, timeout=delay + 30)
        gap = time.monotonic() - killed_at
        assert gap >= 0.9 * delay, f"back-off of {delay} s not waited: {gap:.2f} s"
        seen.add(pid)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
    log = node.stderr()
    deadline = time.monotonic() + 10
    while "starting another in 4 s (it keeps dying)" not in log:
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.05)
        log = node.stderr()
    for delay in (1, 2):
        assert f"starting another in {delay} s (it keeps dying)" in log
    assert scu.echo(Node("n", "PACSCTL", "127.0.0.1", node.port), timeout=10) >= 0

    stopping = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)  # within the 4 s back-off
    code = node.wait(30)
    took = time.monotonic() - stopping
    assert code == 0, node.stderr()[-3000:]
    assert took < 4 + 10
    assert node.stderr().count("starting another") == 4, node.stderr()[-3000:]


def test_ctrl_c_stops_the_web_process_without_a_restart(tmp_path, archive) -> None:
    """Ctrl-C reaches serve, the keeper and the web process at once: the web process ending on
    it is a stop, never a death to restart (several stops, the web process watched meanwhile)."""
    for attempt in range(2):
        node = WebServe(archive[0], tmp_path / f"serve{attempt}.log", archive[1])
        keeper = node.keeper()
        web = node.web_pid
        os.killpg(node.proc.pid, signal.SIGINT)
        seen = set()
        deadline = time.monotonic() + 30
        while node.proc.poll() is None and time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()
            except OSError:
                children = []
            seen.update(int(pid) for pid in children)
            time.sleep(0.005)
        assert node.wait(10) == 0, node.stderr()[-3000:]
        assert seen <= {web}, f"a web process started during the stop: {seen - {web}}"
        assert "starting another" not in node.stderr(), node.stderr()[-3000:]


def test_a_hung_web_process_is_replaced(tmp_path, archive) -> None:
    """A web process that cannot run (SIGSTOPped; in life a blocked event loop) is killed
    `WEDGED_AFTER` s later and replaced; DIMSE answers meanwhile; then SIGTERM: exit 0."""
    node = WebServe(archive[0], tmp_path / "serve.log", archive[1])
    hung = node.web_pid
    os.kill(hung, signal.SIGSTOP)
    assert scu.echo(Node("n", "PACSCTL", "127.0.0.1", node.port), timeout=10) >= 0
    node.wait_for_web(exclude={hung}, timeout=WEDGED_AFTER + 30)
    assert f"web server (pid {hung}) has not run for" in node.stderr()
    assert f"web server (pid {hung}) was killed by SIGKILL" in node.stderr()
    node.proc.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0, node.stderr()[-3000:]
