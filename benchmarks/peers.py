"""Real DICOM peers on loopback, for benchmarks and the interop tests.

- `OrthancPeer`: Orthanc (``/usr/sbin/Orthanc config.json``) on free DICOM and HTTP ports,
  storage in a temp folder, AET ORTHANC, always-allow Store/Echo/Find/Move/Get, synchronous
  C-MOVE, REST on 127.0.0.1 only.
- `StoreSCPPeer`: DCMTK ``/usr/bin/storescp`` writing what it receives into a folder.
- `time_storescu`: wall seconds for DCMTK ``storescu`` to send files over 1 or N parallel
  associations; `peer_baselines` runs it into storescp and Orthanc, for the ratio benchmarks
  print.

Standard library only, so any benchmark script can import it. DCMTK gets ``TCP_NODELAY=1``:
without it every message waits ~40 ms on loopback. Clients here only ever connect to 127.0.0.1
(Orthanc 1.10 has no option to bind its DICOM port to one address; its REST API refuses
remote clients).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DCMTK_BIN = Path("/usr/bin")
ORTHANC_BIN = Path("/usr/sbin/Orthanc")
LOOPBACK = "127.0.0.1"


class PeerError(RuntimeError):
    """A peer process could not be started or a peer tool failed."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def dcmtk_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ plus TCP_NODELAY=1 (DCMTK reads it; without it loopback costs ~40 ms/PDU)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    env.update(extra or {})
    return env


def _listening_sockets(port: int) -> set[int] | None:
    """Inodes of the sockets listening on TCP `port` (None where /proc/net is missing)."""
    inodes: set[int] = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)
                for row in fh:
                    fields = row.split()
                    # fields: sl, local address:port (hex), remote, state (0A = LISTEN), ..., inode
                    if (len(fields) > 9 and fields[3] == "0A"
                            and int(fields[1].rsplit(":", 1)[1], 16) == port):
                        inodes.add(int(fields[9]))
            found = True
        except OSError:
            continue
    return inodes if found else None


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for tid in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{tid}/children", encoding="ascii") as fh:
                    todo.extend(int(child) for child in fh.read().split())
        except OSError:
            continue
    return found


def _socket_inodes(pid: int) -> set[int] | None:
    """Inodes of the sockets held by `pid` or its children (worker processes may own the
    listener); None if the fds of `pid` cannot be read."""
    inodes: set[int] = set()
    for index, proc_id in enumerate(_descendants(pid)):
        try:
            fds = os.listdir(f"/proc/{proc_id}/fd")
        except OSError:
            if index == 0:
                return None
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{proc_id}/fd/{fd}")
            except OSError:  # closed meanwhile
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    return inodes


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None,
                  host: str = LOOPBACK) -> None:
    """Block until `proc` (or anything, if None) listens on `port`; PeerError on timeout/exit.

    Reads the kernel's socket tables instead of connecting, so the server under test sees no
    stray connection (no aborted association in its log or audit trail), and checks that the
    listener is `proc`'s own socket, not another program's that got the port first. Falls back
    to a TCP connect where /proc is not available.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"process exited with {proc.returncode} before listening on {port}")
        listening = _listening_sockets(port)
        if listening is None:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                pass
        elif listening:
            owned = _socket_inodes(proc.pid) if proc is not None else None
            if owned is None or listening & owned:
                return
        time.sleep(0.05)
    raise PeerError(f"no listener of ours on {host}:{port} after {timeout:.0f} s")


def _stop(proc: subprocess.Popen[Any] | None, timeout: float = 10.0,
          graceful: bool = True) -> None:
    """SIGTERM the process (SIGKILL if not `graceful`), SIGKILL it if still alive after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class OrthancPeer:
    """A real Orthanc on free loopback ports with its own temp storage; stop() or `with`.

    `modalities` maps a name to ``[AET, host, port]`` (C-MOVE destinations); more can be added
    while running with `add_modality`. `config` entries override the generated configuration.
    """

    def __init__(self, work_dir: str | os.PathLike[str] | None = None, *, aet: str = "ORTHANC",
                 modalities: dict[str, Sequence[Any]] | None = None,
                 config: dict[str, Any] | None = None, binary: str | os.PathLike[str] = ORTHANC_BIN,
                 start_timeout: float = 60.0) -> None:
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="orthanc-"))
        self.aet = aet
        self.modalities = {k: list(v) for k, v in (modalities or {}).items()}
        self.extra_config = dict(config or {})
        self.binary = str(binary)
        self.start_timeout = start_timeout
        self.dicom_port = 0
        self.http_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.work_dir / "orthanc.log"

    def config(self) -> dict[str, Any]:
        """The configuration written to config.json for the current ports."""
        cfg: dict[str, Any] = {
            "Name": "pacsctl-test-orthanc",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "index"),
            "StorageCompression": False,
            "Plugins": [],
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalities": self.modalities,
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 30,
            "DicomScpTimeout": 30,
            "SynchronousCMove": True,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "SaveJobs": False,
            "LoadPrivateDictionary": False,
            "SyncStorageArea": True,
            "OverwriteInstances": False,
            "DeidentifyLogs": True,
        }
        cfg.update(self.extra_config)
        return cfg

    def start(self, attempts: int = 3, keep_ports: bool = False) -> OrthancPeer:
        """Start Orthanc and wait until REST /system answers; retries on a port race.
        `keep_ports`: again on the ports of the last start (a peer that was down comes back)."""
        if not Path(self.binary).exists():
            raise PeerError(f"Orthanc not found at {self.binary}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        last_error: Exception | None = None
        for _ in range(attempts):
            if not (keep_ports and self.dicom_port and self.http_port):
                self.dicom_port, self.http_port = free_port(), free_port()
            cfg_path = self.work_dir / "config.json"
            cfg_path.write_text(json.dumps(self.config(), indent=2))
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([self.binary, str(cfg_path)], stdout=log,
                                             stderr=subprocess.STDOUT, cwd=self.work_dir,
                                             env=dcmtk_env(), start_new_session=True)
            try:
                self._wait_ready()
                wait_for_port(self.dicom_port, 10, self.proc)
                return self
            except PeerError as exc:
                last_error = exc
                _stop(self.proc)
        raise PeerError(f"Orthanc did not start: {last_error}; log: {self.log_tail()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PeerError(f"Orthanc exited with {self.proc.returncode}")
            try:
                self.rest("/system", timeout=2)
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise PeerError("Orthanc REST /system did not answer in time")

    def log_tail(self, chars: int = 2000) -> str:
        """The end of Orthanc's log (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def rest(self, path: str, method: str = "GET", data: Any = None, timeout: float = 60) -> Any:
        """Call Orthanc's REST API on 127.0.0.1; JSON bodies are (de)serialised."""
        body = None
        if data is not None:
            body = data if isinstance(data, bytes) else json.dumps(data).encode()
        req = urllib.request.Request(f"http://{LOOPBACK}:{self.http_port}{path}", data=body,
                                     method=method)
        users = self.extra_config.get("RegisteredUsers") or {}
        if self.extra_config.get("AuthenticationEnabled") and users:  # as its first user
            import base64

            user, password = next(iter(users.items()))
            req.add_header("Authorization",
                           "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            if "json" in resp.headers.get("Content-Type", ""):
                return json.loads(raw or b"null")
            return raw

    def instance_count(self) -> int:
        """How many instances Orthanc holds."""
        return int(self.rest("/statistics")["CountInstances"])

    def instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every instance Orthanc holds."""
        uids: set[str] = set()
        for orthanc_id in self.rest("/instances"):
            tags = self.rest(f"/instances/{orthanc_id}/simplified-tags")
            uids.add(tags["SOPInstanceUID"])
        return uids

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Register (or replace) a remote modality while running, e.g. a C-MOVE destination."""
        self.modalities[name] = [aet, host, port]
        self.rest(f"/modalities/{name}", "PUT", {"AET": aet, "Host": host, "Port": port})

    def upload(self, path: str | os.PathLike[str]) -> Any:
        """Store one DICOM file through REST (no DICOM networking involved)."""
        return self.rest("/instances", "POST", Path(path).read_bytes())

    def restart(self) -> OrthancPeer:
        """SIGKILL Orthanc (as a crash would) and start it again on the same ports and storage."""
        _stop(self.proc, graceful=False)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.binary, str(self.work_dir / "config.json")], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.work_dir, env=dcmtk_env(),
                                         start_new_session=True)
        self._wait_ready()
        wait_for_port(self.dicom_port, 10, self.proc)
        return self

    def stop(self, graceful: bool = False) -> None:
        """Stop Orthanc and remove its temp folder if we made it.

        Default SIGKILL: a graceful SIGTERM shutdown takes Orthanc ~3.5 s, and the storage of a
        test peer is thrown away anyway. Pass graceful=True to keep a consistent storage.
        """
        _stop(self.proc, graceful=graceful)
        self.proc = None
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> OrthancPeer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StoreSCPPeer:
    """DCMTK storescp on a free loopback port writing received files into `out_dir`.

    Accepts every transfer syntax DCMTK knows (``+xa``) unless `accept_all` is False; more
    storescp options go in `extra_args`. Iterating gives ``(port, out_dir)``.
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, aet: str = "STORESCP",
                 accept_all: bool = True, extra_args: Sequence[str] = (),
                 binary: str | os.PathLike[str] = DCMTK_BIN / "storescp") -> None:
        self.dir = Path(out_dir)
        self.aet = aet
        self.accept_all = accept_all
        self.extra_args = list(extra_args)
        self.binary = str(binary)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir.parent / f"storescp-{aet}.log"

    def start(self, attempts: int = 3) -> StoreSCPPeer:
        """Start storescp and wait until it accepts connections; retries on a port race."""
        if not Path(self.binary).exists():
            raise PeerError(f"storescp not found at {self.binary}")
        self.dir.mkdir(parents=True, exist_ok=True)
        last_error: Exception | None = None
        for _ in range(attempts):
            self.port = free_port()
            args = [self.binary, "-aet", self.aet, "-od", str(self.dir)]
            args += ["+xa"] if self.accept_all else []
            args += [*self.extra_args, str(self.port)]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                             env=dcmtk_env(), start_new_session=True)
            try:
                wait_for_port(self.port, 10, self.proc)
                return self
            except PeerError as exc:
                last_error = exc
                _stop(self.proc)
        raise PeerError(f"storescp did not start: {last_error}")

    def files(self) -> list[Path]:
        """Files storescp has written so far, sorted."""
        return sorted(p for p in self.dir.iterdir() if p.is_file())

    def stop(self) -> None:
        """Stop storescp."""
        _stop(self.proc)
        self.proc = None

    def __iter__(self):  # noqa: ANN204 - lets callers write `port, out_dir = storescp`
        return iter((self.port, self.dir))

    def __enter__(self) -> StoreSCPPeer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def split_files(files: Sequence[str | os.PathLike[str]], parts: int) -> list[list[str]]:
    """Split a file list into `parts` contiguous chunks of near-equal length."""
    items = [str(f) for f in files]
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [c for c in chunks if c]


def time_storescu(files: Sequence[str | os.PathLike[str]], port: int, *,
                  called_aet: str = "ANY-SCP", calling_aet: str = "STORESCU",
                  host: str = LOOPBACK, associations: int = 1,
                  extra_args: Sequence[str] = (), timeout: float = 1800) -> float:
    """Send `files` with DCMTK storescu over `associations` parallel associations.

    Returns wall seconds from the first start to the last exit. Raises PeerError when any
    storescu fails (a failed run has no meaningful time).
    """
    binary = str(DCMTK_BIN / "storescu")
    start = time.perf_counter()
    procs = []
    for chunk in split_files(files, associations):
        cmd = [binary, "-aet", calling_aet, "-aec", called_aet, *extra_args, host, str(port),
               *chunk]
        procs.append(subprocess.Popen(cmd, env=dcmtk_env(), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            errors.append(f"exit {proc.returncode}: " + err.decode(errors="replace")[-500:])
    elapsed = time.perf_counter() - start
    if errors:
        raise PeerError("storescu failed: " + "\n".join(errors))
    return elapsed


def peer_baselines(files: Sequence[str | os.PathLike[str]], associations: int = 1,
                   work_dir: str | os.PathLike[str] | None = None,
                   peers: Sequence[str] = ("storescp", "orthanc")) -> dict[str, float]:
    """Wall seconds for storescu -> each of `peers` (fresh, empty) with the same files.

    Keys are the peer names ("storescp", "orthanc"). Use the figures as the denominator of the
    ratio a benchmark prints, measured in the same run as the pacsctl figure.
    """
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="peers-", dir=work_dir) as tmp:
        if "storescp" in peers:
            with StoreSCPPeer(Path(tmp) / "storescp") as scp:
                results["storescp"] = time_storescu(files, scp.port, called_aet=scp.aet,
                                                    associations=associations)
        if "orthanc" in peers:
            with OrthancPeer(Path(tmp) / "orthanc") as orthanc:
                results["orthanc"] = time_storescu(files, orthanc.dicom_port,
                                                   called_aet=orthanc.aet,
                                                   associations=associations)
                if orthanc.instance_count() != len(files):
                    raise PeerError(f"Orthanc holds {orthanc.instance_count()} of {len(files)}")
    return results


if __name__ == "__main__":  # quick self-check: python benchmarks/peers.py CORPUS_DIR [N]
    import sys

    corpus = sorted(Path(sys.argv[1]).rglob("*.dcm"))
    n_assoc = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    for name, secs in peer_baselines(corpus, n_assoc).items():
        print(f"storescu -> {name:8} {len(corpus)} files, {n_assoc} assoc: {secs:.2f} s")
