"""Worker processes never outlive their command, and a signal stops `import` with a summary.

Real subprocesses and real signals. To catch `verify` and `reindex` mid-run deterministically,
one file of the archive is replaced by a named pipe: the worker that opens it blocks for ever
(as on a hung network file system), so the command is certainly running when it is killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.archive.test_crash import ct_tree
from tests.helpers import cli_env, run_cli
from tests.storage.checks import consistency, object_files

DEADLINE = 60.0  # generous: the machine is shared and loaded


def children(pid: int) -> set[int]:
    """The direct children of `pid` (all its threads')."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its new parent to reap it is dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def wait_until(condition, timeout: float = DEADLINE, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


class Command:
    """`pacsctl ARGS` in its own session, output to files (an orphan holding a pipe must not
    hang the test); every process it started is SIGKILLed at teardown, whatever happened."""

    def __init__(self, folder: Path, *args: str) -> None:
        folder.mkdir(exist_ok=True)
        self.out, self.err = folder / f"out-{time.monotonic_ns()}", folder / f"err-{time.monotonic_ns()}"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "pacsctl", *args], env=cli_env(), stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        self.seen: set[int] = set()
        STARTED.append(self)

    def workers(self) -> set[int]:
        self.seen |= children(self.pid)
        return children(self.pid)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self) -> tuple[int, str, str]:
        code = self.proc.wait(timeout=DEADLINE)
        return code, self.out.read_text(), self.err.read_text()

    def kill_all(self) -> None:
        for pid in {self.pid} | self.seen:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.proc.wait(timeout=DEADLINE)


STARTED: list[Command] = []


@pytest.fixture(autouse=True)
def _no_process_left() -> Iterator[None]:
    yield
    while STARTED:
        STARTED.pop().kill_all()


def start(folder: Path, *args: str) -> Command:
    return Command(folder, *args)


def archive_with_a_hanging_file(archive_dir: Path, tmp_path: Path, count: int = 40) -> Path:
    """An archive of `count` instances, one of them replaced by a FIFO nobody writes to."""
    tree = tmp_path / "tree"
    ct_tree(tree, count)
    result = run_cli("import", "--jobs", "1", str(tree))
    assert result.returncode == 0, result.stderr
    victim = sorted(object_files(archive_dir).values())[count // 2]
    victim.unlink()
    os.mkfifo(victim, 0o600)
    return victim


@pytest.mark.parametrize("command", ["verify", "reindex"])
def test_kill_9_of_a_command_with_workers_leaves_no_worker(command: str, archive_dir: Path, tmp_path: Path) -> None:
    archive_with_a_hanging_file(archive_dir, tmp_path)
    proc = start(tmp_path / "logs", command, "--jobs", "2")
    assert wait_until(lambda: len(proc.workers()) >= 2 or proc.poll() is not None), "no workers started"
    assert proc.poll() is None, proc.wait()
    workers = proc.workers()
    time.sleep(0.5)  # the workers are at work (one of them blocked on the pipe)
    assert proc.poll() is None
    proc.proc.kill()
    proc.proc.wait(timeout=DEADLINE)
    assert wait_until(lambda: not any(alive(w) for w in workers), timeout=10), \
        f"workers of `{command}` outlived their parent: {[w for w in workers if alive(w)]}"


def test_kill_9_of_import_leaves_no_worker_writing(archive_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ct_tree(tree, 400, rows=256)
    proc = start(tmp_path / "logs", "import", "--jobs", "2", str(tree))
    assert wait_until(lambda: len(object_files(archive_dir)) >= 20 or proc.poll() is not None)
    workers = proc.workers()
    assert proc.poll() is None and len(workers) == 2, "the import finished before it could be killed"
    proc.proc.kill()
    proc.proc.wait(timeout=DEADLINE)
    assert wait_until(lambda: not any(alive(w) for w in workers), timeout=10), \
        f"import workers outlived their parent: {[w for w in workers if alive(w)]}"
    stored = len(object_files(archive_dir))
    time.sleep(0.5)
    assert len(object_files(archive_dir)) == stored  # nobody writes any more
    result = run_cli("import", "--json", str(tree))  # the journals are free: a re-run completes
    assert result.returncode == 0, result.stderr
    assert len(object_files(archive_dir)) == 400
    assert consistency(archive_dir) == []


def test_kill_9_of_backup_leaves_no_process(archive_dir: Path, tmp_path: Path) -> None:
    """`backup` copies in threads of its own process: killed, nothing of it runs on."""
    archive_with_a_hanging_file(archive_dir, tmp_path)
    proc = start(tmp_path / "logs", "backup", str(tmp_path / "backup"))
    assert wait_until(lambda: (tmp_path / "backup" / "objects").is_dir() or proc.poll() is not None)
    time.sleep(0.5)
    assert proc.poll() is None, proc.wait()  # blocked on the pipe
    spawned = proc.workers()
    proc.proc.kill()
    proc.proc.wait(timeout=DEADLINE)
    assert wait_until(lambda: not alive(proc.pid) and not any(alive(c) for c in spawned), timeout=10)


@pytest.mark.parametrize(("signum", "jobs"), [(signal.SIGINT, "2"), (signal.SIGTERM, "2"), (signal.SIGTERM, "1")],
                         ids=["SIGINT", "SIGTERM", "SIGTERM-one-process"])
def test_a_signal_stops_import_soon_with_a_summary_and_exit_130(signum: int, jobs: str, archive_dir: Path, tmp_path: Path) -> None:
    """One Ctrl-C (to the whole process group, as a terminal sends it) or one SIGTERM (to the
    command alone, as `kill` or systemd send it): no new batch starts, running ones commit,
    the summary says what was done, exit 130, no worker left, and a re-run completes."""
    tree = tmp_path / "tree"
    total = 400
    ct_tree(tree, total, rows=256)
    proc = start(tmp_path / "logs", "import", "--jobs", jobs, "--json", str(tree))
    assert wait_until(lambda: len(object_files(archive_dir)) >= 20 or proc.poll() is not None)
    workers = proc.workers()
    assert proc.poll() is None and (workers or jobs == "1"), "the import finished before the signal"
    signalled = time.monotonic()
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    code, out, err = proc.wait()
    took = time.monotonic() - signalled
    assert code == 130, err
    assert took < 15, f"took {took:.1f} s to stop"  # ~2 s here; generous for a loaded machine
    assert "Traceback" not in err and "interrupted" in err
    summary = json.loads(out.splitlines()[-1])
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert summary["files"] == summary["imported"] + summary["duplicates"] + summary["quarantined"] + summary["skipped"]
    stored = len(object_files(archive_dir))
    assert 20 <= summary["imported"] <= stored < total
    assert not any(alive(w) for w in workers)
    assert list((archive_dir / "index" / "journal").glob("*.ndjson")) == []
    assert list((archive_dir / "tmp").iterdir()) == []
    assert consistency(archive_dir) == []
    result = run_cli("import", "--json", str(tree))
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout.splitlines()[-1])
    assert (again["imported"], again["duplicates"]) == (total - stored, stored)


def test_human_summary_of_an_interrupted_import(archive_dir: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ct_tree(tree, 400, rows=256)
    proc = start(tmp_path / "logs", "import", "--jobs", "2", str(tree))
    assert wait_until(lambda: len(object_files(archive_dir)) >= 20 or proc.poll() is not None)
    assert proc.poll() is None, "the import finished before the signal"
    proc.workers()
    os.kill(proc.pid, signal.SIGTERM)
    code, _out, err = proc.wait()
    assert code == 130, err
    assert "interrupted: imported" in err and "run the same import again" in err


def test_ctrl_c_stops_verify_when_a_worker_hangs(archive_dir: Path, tmp_path: Path) -> None:
    """A worker blocked on a hung file (here a pipe) must not make Ctrl-C hang the command:
    exit 130 at once, the workers killed (the pool used to wait for them for ever)."""
    archive_with_a_hanging_file(archive_dir, tmp_path)
    proc = start(tmp_path / "logs", "verify", "--jobs", "2")
    assert wait_until(lambda: len(proc.workers()) >= 2 or proc.poll() is not None), "no workers started"
    workers = proc.workers()
    time.sleep(0.5)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)
    code, _out, err = proc.wait()
    assert code == 130 and "interrupted" in err and "Traceback" not in err, err
    assert wait_until(lambda: not any(alive(w) for w in workers), timeout=10)
