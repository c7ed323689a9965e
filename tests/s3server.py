"""A real S3-compatible object store on loopback for tests and benchmarks: OpenStack Swift.

Debian's Swift packages (`apt-get install memcached swift-proxy swift-account swift-container
swift-object`, installed by `.ci/run`) with the `s3api` middleware, one replica, every byte
under one folder: the same set-up as `../shared/tools/s3-server`, carried here so that a clone
without shared/ runs the suite. Start-up takes 5-10 s: the `s3_store` fixture (tests/conftest.py)
starts one per session.

    with SwiftS3(tmp_dir) as store:       # store.endpoint, store.env (AWS_* variables)
        store.make_bucket("backups")
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

ACCESS_KEY = "test:tester"
SECRET_KEY = "testing"
REGION = "us-east-1"
BINARIES = (
    "memcached",
    "swift-ring-builder",
    "swift-proxy-server",
    "swift-account-server",
    "swift-container-server",
    "swift-object-server",
)
APT_PACKAGES = "memcached swift-proxy swift-account swift-container swift-object"

_PROXY_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo "
    "versioned_writes symlink proxy-logging proxy-server"
)


class S3ServerError(RuntimeError):
    """The store could not be started (a missing package, a server that did not come up)."""


def missing_binaries() -> list[str]:
    """The Swift/memcached programs not installed here."""
    return [name for name in BINARIES if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SwiftS3:
    """Swift's proxy, account, container and object servers plus memcached, on free ports."""

    def __init__(self, work_dir: str | os.PathLike[str], start_timeout: float = 60.0) -> None:
        self.dir = Path(work_dir).absolute()
        self.start_timeout = start_timeout
        self.port = 0
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL (path-style addressing)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables every AWS tool (and pacsctl) reads to use this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self) -> SwiftS3:
        """Write the configuration, build the rings, start the servers, wait for the proxy."""
        missing = missing_binaries()
        if missing:
            raise S3ServerError(f"missing {', '.join(missing)} (apt-get install {APT_PACKAGES})")
        self.port = _free_port()
        ports = {name: _free_port() for name in ("account", "container", "object", "memcached")}
        for sub in ("srv/d1", "run", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._write_config(ports)
        self._build_rings(ports)
        user = _user()
        self._spawn(
            "memcached",
            ["memcached", "-l", "127.0.0.1", "-p", str(ports["memcached"]), "-U", "0", "-m", "64", "-u", user],
        )
        for server in ("account", "container", "object", "proxy"):
            self._spawn(server, [f"swift-{server}-server", str(self.dir / f"{server}-server.conf"), "-v"])
        self._wait_healthy()
        return self

    def client(self) -> Any:
        """A boto3 S3 client for this store (retrying while a young Swift answers 503)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 10}),
        )

    def make_bucket(self, name: str) -> str:
        """Create a bucket (boto3, like any client would); returns its name."""
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL after a few seconds)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def __enter__(self) -> SwiftS3:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _build_rings(self, ports: dict[str, int]) -> None:
        """The three one-device rings, built in one run of Swift's own Python (what
        `swift-ring-builder create 6 1 1; add; rebalance` does, without nine process starts)."""
        script = (
            "import sys\n"
            "from swift.common.ring import RingBuilder\n"
            "for arg in sys.argv[1:]:\n"
            "    path, port = arg.rsplit(':', 1)\n"
            "    b = RingBuilder(6, 1, 1)\n"
            "    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': int(port),\n"
            "               'device': 'd1', 'weight': 1})\n"
            "    b.rebalance()\n"
            "    b.get_ring().save(path + '.ring.gz')\n"
            "    b.save(path + '.builder')\n"
        )
        python = _swift_python()
        args = [f"{self.dir / ring}:{ports[ring]}" for ring in ("account", "container", "object")]
        self._run(python, "-c", script, *args)

    def _run(self, *argv: str) -> None:
        result = subprocess.run(list(argv), capture_output=True, check=False)
        if result.returncode != 0:
            raise S3ServerError(f"{' '.join(argv)} failed: {result.stderr.decode(errors='replace')[-500:]}")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / "log" / f"{name}.log", "wb")  # noqa: SIM115 - the server keeps writing it
        try:
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        finally:
            log.close()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/healthcheck", timeout=2) as answer:
                    if answer.status == 200 and self._answers_s3():
                        return
            except OSError:
                pass
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.2)
        self.stop()
        raise S3ServerError(f"the Swift proxy did not start; logs in {self.dir / 'log'}")

    def _answers_s3(self) -> bool:
        """Whether the account and container servers behind the proxy answer too (a bucket made
        and removed): the proxy's health check passes before they do, and a first CreateBucket
        then fails with 503."""
        from botocore.exceptions import BotoCoreError, ClientError

        probe = f"probe-{os.getpid()}"
        try:
            client = self.client()
            client.create_bucket(Bucket=probe)
            client.delete_bucket(Bucket=probe)
        except (ClientError, BotoCoreError):
            return False
        return True

    def _write_config(self, ports: dict[str, int]) -> None:
        tag = self.dir.name
        (self.dir / "swift.conf").write_text(
            f"[swift-hash]\nswift_hash_path_suffix = {tag}-suffix\nswift_hash_path_prefix = {tag}-prefix\n"
            "[storage-policy:0]\nname = Policy-0\ndefault = yes\n"
        )

        def common(port: int, name: str) -> str:
            return (
                f"[DEFAULT]\ndevices = {self.dir / 'srv'}\nmount_check = false\nbind_ip = 127.0.0.1\n"
                f"bind_port = {port}\nworkers = 1\nuser = {_user()}\nswift_dir = {self.dir}\n"
                f"log_name = {name}\nlog_address = {self.dir / 'log' / 'nosyslog'}\nlog_level = WARNING\n"
            )

        for server in ("account", "container", "object"):
            (self.dir / f"{server}-server.conf").write_text(
                common(ports[server], server)
                + f"[pipeline:main]\npipeline = {server}-server\n"
                + f"[app:{server}-server]\nuse = egg:swift#{server}\n"
            )
        filters = {
            "tempauth": f"use = egg:swift#tempauth\nuser_{ACCESS_KEY.replace(':', '_')} = {SECRET_KEY} .admin",
            "s3api": f"use = egg:swift#s3api\nlocation = {REGION}\ndns_compliant_bucket_names = false",
            "cache": f"use = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{ports['memcached']}",
        }
        for name in ("catch_errors", "gatekeeper", "healthcheck", "proxy_logging", "listing_formats"):
            filters.setdefault(name.replace("_logging", "-logging"), f"use = egg:swift#{name}")
        for name in ("copy", "slo", "dlo"):
            filters[name] = f"use = egg:swift#{name}"
        # S3 bucket versioning (PutBucketVersioning), so that its detection can be tested.
        filters["versioned_writes"] = "use = egg:swift#versioned_writes\nallow_object_versioning = true"
        filters["symlink"] = "use = egg:swift#symlink"
        proxy = common(self.port, "proxy") + f"[pipeline:main]\npipeline = {_PROXY_PIPELINE}\n"
        proxy += (
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\nallow_account_management = true\n"
        )
        proxy += "".join(f"[filter:{name}]\n{body}\n" for name, body in filters.items())
        (self.dir / "proxy-server.conf").write_text(proxy)


def _swift_python() -> str:
    """The interpreter Swift's programs run with (Debian's python3, not the test virtualenv)."""
    program = shutil.which("swift-ring-builder") or "/usr/bin/swift-ring-builder"
    with open(program, encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    return first[2:].strip().split()[0] if first.startswith("#!") else "/usr/bin/python3"


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
