"""Helpers shared by every test module: ports, peer tools, pydicom's test files, the CLI runner.

Import them as ``from tests.helpers import free_port, require_tool, run_cli``; the same things
are also offered as fixtures by ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pydicom
import pytest
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage

# One implementation for tests and benchmarks: free ports and DCMTK's environment (TCP_NODELAY=1).
from benchmarks.peers import dcmtk_env, free_port  # noqa: F401  (re-exported)

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTDATA_DIR = Path(pydicom.__file__).parent / "data" / "test_files"
DCMTK_BIN = Path("/usr/bin")
ORTHANC_BIN = Path("/usr/sbin/Orthanc")

# pydicom reads these without complaint, yet they are damaged on purpose: tests wanting valid
# input must not use them, tests of quarantine can (see `broken_dicom_files`).
KNOWN_BROKEN = {
    "MR_truncated.dcm": "pixel data cut short",
    "rtplan_truncated.dcm": "data set cut short in the middle of a sequence",
}


def in_ci() -> bool:
    """True when running in CI (env ``CI`` set and not empty/"0"/"false")."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_peer(message: str) -> None:
    """Fail in CI (a missing peer must not pass silently there), skip elsewhere."""
    if in_ci():
        pytest.fail(f"{message} (CI is set: peers are required)")
    pytest.skip(message)


def require_tool(path_or_name: str) -> str:
    """Return the absolute path of an executable; fail the test in CI if missing, else skip.

    A bare name is looked up in /usr/bin first (so DCMTK wins over pynetdicom's console scripts
    of the same name in the venv), then on PATH.
    """
    candidate = Path(path_or_name)
    if candidate.is_absolute():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        missing_peer(f"required tool not found: {path_or_name}")
    in_usr_bin = DCMTK_BIN / path_or_name
    if in_usr_bin.is_file() and os.access(in_usr_bin, os.X_OK):
        return str(in_usr_bin)
    found = shutil.which(path_or_name)
    if found is None:
        missing_peer(f"required tool not found: {path_or_name}")
    return str(Path(found).resolve())


def dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool (``/usr/bin/<tool>``), never pynetdicom's namesake."""
    return require_tool(str(DCMTK_BIN / tool))


def run_dcmtk(tool: str, *args: str, timeout: float = 60, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool with `dcmtk_env()`, capture text output; raise on failure if `check`."""
    proc = subprocess.run([dcmtk(tool), *args], env=dcmtk_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a `python -m pacsctl` child: ours plus `env`, repo root on PYTHONPATH."""
    merged = dict(os.environ)
    if env:
        merged.update(env)
    paths = [str(REPO_ROOT)] + [p for p in merged.get("PYTHONPATH", "").split(os.pathsep) if p]
    merged["PYTHONPATH"] = os.pathsep.join(paths)
    # Rich must not draw progress bars or colours into captured output.
    merged.setdefault("NO_COLOR", "1")
    merged.setdefault("COLUMNS", "200")
    return merged


def run_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
            input: str | None = None, timeout: float = 120,
            cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pacsctl ARGS`` in a subprocess and return it (text stdout/stderr).

    Works uninstalled (the repo root is put on PYTHONPATH). The child inherits os.environ, so a
    `PACSCTL_ARCHIVE` set by the `archive_dir` fixture applies; `env` adds or overrides.
    """
    # No input: stdin is /dev/null, so a command that prompts fails instead of hanging.
    stdin = subprocess.DEVNULL if input is None else None
    return subprocess.run([sys.executable, "-m", "pacsctl", *map(str, args)], env=cli_env(env),
                          input=input, stdin=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, check=False)


@dataclass(frozen=True)
class TestFile:
    """One readable DICOM file from pydicom's test data and the identifiers tests check."""

    __test__ = False  # not a pytest test class

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


@cache
def readable_test_files() -> tuple[TestFile, ...]:
    """Every valid Part-10 instance among pydicom's top-level test files, sorted by name.

    Kept: a File Meta header, SOP Class and Instance UIDs, fully parsable, not a DICOMDIR, not
    in `KNOWN_BROKEN`. Several files share a SOP Instance UID (the same image in other transfer
    syntaxes); all of them are kept here.
    """
    found: list[TestFile] = []
    for path in sorted(TESTDATA_DIR.iterdir()):
        if not path.is_file() or path.name in KNOWN_BROKEN:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path)
                for _ in ds.iterall():  # parse deferred/nested elements now
                    pass
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError):
            continue
        meta = ds.file_meta
        sop_uid, sop_class = ds.get("SOPInstanceUID"), ds.get("SOPClassUID")
        tsyntax = meta.get("TransferSyntaxUID")
        if not (sop_uid and sop_class and tsyntax):
            continue
        if meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
            continue
        found.append(TestFile(path, str(sop_uid), str(sop_class), str(tsyntax)))
    return tuple(found)


def unique_test_files() -> list[Path]:
    """`readable_test_files` with one file per SOP Instance UID (the first by name)."""
    seen: set[str] = set()
    unique: list[Path] = []
    for item in readable_test_files():
        if item.sop_instance_uid not in seen:
            seen.add(item.sop_instance_uid)
            unique.append(item.path)
    return unique


def broken_test_files() -> list[Path]:
    """pydicom's deliberately damaged DICOM files (truncated): expect quarantine for these."""
    return [TESTDATA_DIR / name for name in sorted(KNOWN_BROKEN)]


class CliProcess:
    """``python -m pacsctl ARGS`` running in the background (a `serve`, a long `import`).

    stdout and stderr go to files in `log_dir` (no pipe to fill up and block the child).
    """

    def __init__(self, *args: str | os.PathLike[str], log_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.args = [str(a) for a in args]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = log_dir / "stdout.txt"
        self.stderr_path = log_dir / "stderr.txt"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "pacsctl", *self.args],
                                         env=cli_env(env), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        """Process id of the child."""
        return self.proc.pid

    def stdout(self) -> str:
        """Everything the child wrote to stdout so far."""
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        """Everything the child wrote to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send `sig` and wait for the exit code; SIGKILL if it has not exited after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def kill(self) -> int:
        """SIGKILL (a crash, nothing flushed) and wait; returns the exit code (-9)."""
        return self.stop(signal.SIGKILL)


@dataclass
class ServeProcess:
    """A running ``pacsctl serve`` on 127.0.0.1 started by the `serve_factory` fixture."""

    __test__ = False

    process: CliProcess
    port: int
    aet: str
    archive: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop it (SIGTERM: finish in-flight stores, exit 0) and return the exit code."""
        return self.process.stop(sig, timeout)

    def kill(self) -> int:
        """SIGKILL it, as a crash or power cut would."""
        return self.process.kill()

    def stderr(self) -> str:
        """The server's log so far."""
        return self.process.stderr()


def start_serve(archive: Path, log_dir: Path, *args: str, aet: str = "PACSCTL",
                env: dict[str, str] | None = None, timeout: float = 30,
                attempts: int = 3) -> ServeProcess:
    """Start ``pacsctl --archive ARCHIVE serve`` on a free loopback port and wait until it
    listens (its own socket, checked without connecting); `args` are more serve options."""
    from benchmarks.peers import PeerError, wait_for_port

    error = ""
    for attempt in range(attempts):  # another process may take the free port first
        port = free_port()
        process = CliProcess("--archive", archive, "serve", "--host", "127.0.0.1", "--port",
                             str(port), "--aet", aet, *args, env=env,
                             log_dir=log_dir / f"serve-{port}-{attempt}")
        try:
            wait_for_port(port, timeout, process.proc)
            return ServeProcess(process, port, aet, archive)
        except PeerError as exc:
            process.kill()
            error = f"{exc}\n{process.stderr()[-2000:]}"
    raise AssertionError(f"pacsctl serve did not start: {error}")


def invoke_cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
               input: str | None = None, timeout: float | None = None,
               cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """`run_cli`'s in-process twin: ``pacsctl ARGS`` through the same error boundary (typer's
    CliRunner calls the root group's `main`), no Python start. Same result type as `run_cli`.

    For tests of what a command does; signals, crashes and real peers need `run_cli`.
    `timeout` is accepted for the same signature and not enforced (pytest-timeout is).
    """
    from typer.testing import CliRunner

    from pacsctl.cli.app import app

    merged = {"NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    argv = [str(a) for a in args]
    previous = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        result = CliRunner().invoke(app, argv, env=merged, input=input)
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess([sys.executable, "-m", "pacsctl", *argv], result.exit_code,
                                       result.stdout, result.stderr)


# Feeds a command line to the generated bash function the way bash's completion would.
BASH_DRIVER = r"""
source "$1"
line="$2"
read -ra COMP_WORDS <<< "$line"
if [[ "$line" == *" " ]]; then COMP_WORDS+=(""); fi
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_pacsctl
printf '%s\n' "${COMPREPLY[@]}"
"""


def bash_complete(script: Path, line: str, cwd: Path) -> list[str]:
    """The words the bash completion `script` offers for `line`."""
    proc = subprocess.run(["bash", "-c", BASH_DRIVER, "driver", str(script), line], cwd=cwd,
                          capture_output=True, text=True, check=True)
    return [w for w in proc.stdout.splitlines() if w]


def serve_workers(pid: int) -> list[int]:
    """The worker processes of the `pacsctl serve` with this pid: its children, except the
    routes' forwarder (a child of its own interpreter, `pacsctl.routing.process`)."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"pacsctl.routing.process" not in cmdline:
            out.append(int(child))
    return out
