"""A lease on an object-store prefix: one writer at a time where there is no flock.

The lease is the object `PREFIX/.pacsctl-lock` (JSON: owner id, what, host, pid, start, expiry),
renewed every `ttl / 3` seconds while its holder runs and deleted at the end. A holder that died
(kill -9, a lost machine) stops renewing: once the expiry has passed, the next run takes the
lease over with a warning; on the same host it does so at once when the holder's pid is gone.

Taking it: a conditional PUT (`If-None-Match: *`) where the store supports it (AWS S3, recent
MinIO and Ceph), which is race-free. Stores without conditional writes (OpenStack Swift's S3 API)
get a plain PUT, then a read-back after `settle` seconds: the run goes on only if it is still the
owner. That catches two runs started seconds apart, not two whose writes land within `settle` of
each other. Taking over an expired lease is check-then-write on every store.
Expiry is compared with this host's clock: hosts sharing a prefix need synchronised clocks (NTP).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType

from pacsctl.errors import PacsctlError
from pacsctl.storage.files import process_alive
from pacsctl.storage.locks import LockBusy, LockHolder
from pacsctl.storage.objects import CreateResult, ObjectStore, ObjectStoreError, ObjectStoreFailure

LEASE_NAME = ".pacsctl-lock"
DEFAULT_TTL = 120.0  # seconds a lease lives unless renewed (renewed every third of it)
TTL_ENV = "PACSCTL_LEASE_SECONDS"  # settable, e.g. for tests or a very slow link
MAX_SETTLE = 2.0  # read-back delay on stores without conditional writes


@dataclass(frozen=True)
class LeaseRecord:
    """The lease object's content."""

    owner: str  # a fresh id per run: pid and host alone may repeat
    what: str
    host: str
    pid: int
    started: str  # ISO 8601, UTC
    expires: float  # Unix time, by the holder's clock
    ttl: float

    @classmethod
    def parse(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None when the object is not a lease pacsctl can read."""
        try:
            r = json.loads(data)
            return cls(
                str(r["owner"]),
                str(r["what"]),
                str(r["host"]),
                int(r["pid"]),
                str(r["started"]),
                float(r["expires"]),
                float(r["ttl"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def encode(self) -> bytes:
        """The object's bytes."""
        return (json.dumps(asdict(self)) + "\n").encode("utf-8")

    def holder(self) -> LockHolder:
        """Who holds it, as the folder lock says it."""
        return LockHolder(self.what, self.pid, self.host, self.started)


class LeaseLost(PacsctlError):
    """Another run took this run's lease (it was broken, or expired while the store was unreachable)."""


def default_ttl() -> float:
    """The lease time: `PACSCTL_LEASE_SECONDS`, else DEFAULT_TTL."""
    try:
        return max(1.0, float(os.environ.get(TTL_ENV, "") or DEFAULT_TTL))
    except ValueError:
        return DEFAULT_TTL


def stale_reason(record: LeaseRecord | None, now: float | None = None) -> str | None:
    """Why a lease may be taken over (its writer is dead), or None while it is live."""
    if record is None:
        return "the lock object is unreadable"
    now = time.time() if now is None else now
    if now > record.expires:
        return f"it expired at {_iso(record.expires)} (not renewed: its run died)"
    if record.host == socket.gethostname() and not process_alive(record.pid):
        return f"its process (pid {record.pid}) on this host is gone"
    return None


class Lease:
    """The lease of one run on `store`'s prefix; a context manager (acquire / release)."""

    def __init__(
        self,
        store: ObjectStore,
        what: str,
        *,
        ttl: float | None = None,
        settle: float | None = None,
        wait: bool = False,
        break_lock: bool = False,
        on_wait: Callable[[LockHolder | None], None] = lambda holder: None,
        on_takeover: Callable[[LockHolder | None, str], None] = lambda holder, why: None,
    ) -> None:
        self.store, self.what = store, what
        self.ttl = ttl if ttl is not None else default_ttl()
        self.settle = settle if settle is not None else min(MAX_SETTLE, self.ttl / 10)
        self.wait, self.break_lock = wait, break_lock
        self.on_wait, self.on_takeover = on_wait, on_takeover
        self.owner = uuid.uuid4().hex
        self.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.conditional: bool | None = None  # whether the store honoured If-None-Match (after acquire)
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # ---- taking it ----

    def acquire(self) -> None:
        """Take the lease (or raise LockBusy naming the holder), then renew it in the background."""
        told = False
        while True:
            current, exists = self._read()
            if exists and (current is None or current.owner != self.owner):
                why = "--break-lock" if self.break_lock else stale_reason(current)
                if why is None:
                    assert current is not None
                    if not self.wait:
                        raise LockBusy(
                            str(self.store.url),
                            current.holder(),
                            hint=f"its lease runs to {_iso(current.expires)} unless renewed; wait for it "
                            "(--wait), or --break-lock if you know it is dead",
                        )
                    if not told:
                        self.on_wait(current.holder())
                        told = True
                    time.sleep(min(5.0, max(0.2, self.ttl / 10)))
                    continue
                self.on_takeover(current.holder() if current else None, why)
                self.break_lock = False  # broken once: a run that takes it meanwhile is respected
                if self._write_and_confirm():
                    break
                continue
            created = self.store.create_bytes(LEASE_NAME, self._record().encode())
            if created is CreateResult.CREATED:
                self.conditional = True
                break
            if created is CreateResult.UNSUPPORTED:
                self.conditional = False
                if self._write_and_confirm():
                    break
            # EXISTS, or another run's write won the read-back: look again
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True)
        self._renewer.start()

    def _write_and_confirm(self) -> bool:
        """Plain PUT, then read back after `settle`: still ours?"""
        self.store.put_bytes(LEASE_NAME, self._record().encode())
        time.sleep(self.settle)
        current, _ = self._read()
        return current is not None and current.owner == self.owner

    # ---- holding it ----

    def check(self) -> None:
        """Raise LeaseLost when another run has taken the lease meanwhile."""
        if self.lost:
            raise LeaseLost(
                f"{self.store.url}: another run took over this run's lock",
                hint="run the backup again once the other run finished",
            )

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                current, _ = self._read()
                if current is None or current.owner != self.owner:
                    self.lost = True
                    return
                self.store.put_bytes(LEASE_NAME, self._record().encode())
            except ObjectStoreError:  # a blip: try again next time (the lease has 3 renewals of slack)
                continue

    def release(self) -> None:
        """Stop renewing and delete the lease, if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        try:
            current, _ = self._read()
            if current is not None and current.owner == self.owner:
                self.store.delete([LEASE_NAME])
        except ObjectStoreError:  # unreachable: the lease expires by itself
            pass

    # ---- the object ----

    def _record(self) -> LeaseRecord:
        return LeaseRecord(
            self.owner,
            self.what,
            socket.gethostname(),
            os.getpid(),
            self.started,
            time.time() + self.ttl,
            self.ttl,
        )

    def _read(self) -> tuple[LeaseRecord | None, bool]:
        """The lease there (None if unreadable) and whether there is one at all."""
        try:
            data = self.store.get_bytes(LEASE_NAME)
        except ObjectStoreError as exc:
            if exc.failure is ObjectStoreFailure.NOT_FOUND:
                return None, False
            raise
        return LeaseRecord.parse(data), True


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
