"""The forwarder: delivers each route's outbox to its destination, one thread per route.

A route's entries go oldest first, in batches; an entry is marked delivered only once its
destination confirmed it. A destination that cannot be reached holds its queue (nothing is
counted against the entries) and is tried again after 1, 2, 4 ... seconds, at most the route's
`max_backoff`. An instance the destination refuses is tried again with the same back-off and,
after `max_attempts` refusals, becomes a dead letter (`route status`, `route retry`). A route
with `delay` waits until a series has been quiet that long. Only one forwarder works on a route
at a time (`outbox/ROUTE/forwarder.lock`): serve's, or `pacsctl route run`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsctl.config import CONFIG_NAME, Config, Route, load_config
from pacsctl.errors import PacsctlError
from pacsctl.routing.destinations import (
    Delivery,
    Destination,
    DestinationDown,
    DownCause,
    destination_for,
)
from pacsctl.routing.queue import EntryState, RouteQueue
from pacsctl.storage import files

LOG = logging.getLogger(__name__)

BATCH = 64  # entries per delivery round (one association, one STOW request)
POLL = 0.5  # seconds between looks at the outbox when nothing is due
# After a round short of a full batch, wait this long for more to arrive: while the node is busy,
# rounds of a few instances each would cost a durable log write (a journal commit that the
# node's own group commits then wait behind) per handful of forwards.
GATHER = 0.25
# Forwarding yields to receiving: while intents keep arriving (the newest less than
# `ARRIVALS_QUIET` s old) only entries that have waited `MAX_LAG` s go, so a burst of stores is
# acknowledged at full speed and forwarded in the quiet after it; a node that never goes quiet
# still forwards everything, `MAX_LAG` late.
ARRIVALS_QUIET = 1.0
MAX_LAG = 10.0
FIRST_BACKOFF = 1.0
COMPACT_EVERY = 10.0  # seconds between compactions of a route's outbox
STATUS_NAME = "status.json"  # the destination's state (down since, next try), for `route status`
FORWARDER_LOCK = "forwarder.lock"

DestinationFactory = Callable[[Path, Route, Config], Destination]


@dataclass
class RouteReport:
    """What one `route run --once` did for a route."""

    route: str
    delivered: int = 0
    refused: int = 0
    dead: int = 0  # became dead letters in this run
    pending: int = 0  # left to deliver
    down: str = ""  # why the destination could not be reached, if it could not
    down_cause: DownCause | None = None
    busy: bool = False  # another forwarder (serve's) holds the route

    def as_dict(self) -> dict[str, Any]:
        """The run's JSON record of this route."""
        return {"type": "route", "name": self.route, "delivered": self.delivered,
                "refused": self.refused, "dead": self.dead, "pending": self.pending,
                "down": self.down, "down_cause": self.down_cause.value if self.down_cause else None,
                "busy": self.busy}  # fmt: skip


@dataclass
class RouteForwarder:
    """Delivers one route's outbox; `step` does one round."""

    root: Path
    route: Route
    config: Config
    factory: DestinationFactory = destination_for
    queue: RouteQueue = field(init=False)
    down_count: int = 0
    down_until: float = 0.0
    report: RouteReport = field(init=False)
    tried: set[str] = field(default_factory=set)
    _destination: Destination | None = None
    _compacted_at: float = 0.0
    _stale_status: bool = False  # a "down" left by an earlier forwarder (`route run --once`)

    def __post_init__(self) -> None:
        self.queue = RouteQueue(self.root, self.route.name)
        self.report = RouteReport(self.route.name)
        self._stale_status = bool(read_status(self.root, self.route.name))

    def step(self, ignore_backoff: bool = False) -> float:
        """Deliver one batch of what is due; returns how long to wait before the next step
        (0: more may be due at once)."""
        self.queue.refresh()
        now = time.time()
        if now < self.down_until and not ignore_backoff:
            return min(self.down_until - now, POLL)
        due = self.queue.due(now, self.route.delay, ignore_next_try=ignore_backoff)
        if ignore_backoff:  # one run: every entry tried once at most
            due = [e for e in due if e.key not in self.tried]
        held = False
        if not ignore_backoff and now - self.queue.last_queued < ARRIVALS_QUIET:
            young = len(due)
            due = [e for e in due if now - e.queued_at >= MAX_LAG]
            held = len(due) < young
        due = due[:BATCH]
        self.tried.update(e.key for e in due)
        if held and not due:
            return GATHER
        if not due:
            if now - self._compacted_at > COMPACT_EVERY:
                self._compacted_at = now
                self.queue.compact()
            nxt = self.queue.next_event(now, self.route.delay)
            return POLL if nxt is None else max(0.05, min(nxt - now, POLL))
        try:
            if self._destination is None:
                self._destination = self.factory(self.root, self.route, self.config)
            results = self._destination.deliver(due)
        except DestinationDown as exc:
            # the back-off counts from the failure: a round that waited out a time-out
            # longer than the back-off would otherwise be retried at once
            self._down(str(exc), time.time(), exc.cause)
            return 0.0 if ignore_backoff else min(self.down_until - now, POLL)
        except (PacsctlError, OSError) as exc:
            self._down(str(exc), time.time(), DownCause.UNREACHABLE)
            return 0.0 if ignore_backoff else min(self.down_until - now, POLL)
        if self.down_count:
            LOG.warning("route %s: %s reachable again", self.route.name, self._where())
            self.down_count, self.down_until = 0, 0.0
            self._write_status(None)
        elif self._stale_status:
            self._write_status(None)
        self._stale_status = False
        self._settle(due, results, now)
        return 0.0 if len(due) == BATCH or ignore_backoff else GATHER

    def _settle(self, due: list, results: dict, now: float) -> None:
        updates = []
        for entry in due:
            result = results.get(entry.key)
            if result is None:  # not reached in this round (a full STOW request)
                continue
            if result.delivery is Delivery.DELIVERED:
                updates.append((entry, EntryState.DELIVERED, entry.attempts, 0.0, ""))
                self.report.delivered += 1
            elif result.delivery is Delivery.REFUSED:
                attempts = entry.attempts + 1
                self.report.refused += 1
                if attempts >= self.route.max_attempts or result.final:
                    updates.append((entry, EntryState.DEAD, attempts, 0.0, result.reason))
                    self.report.dead += 1
                    LOG.error(
                        "route %s: %s refused %d times, now a dead letter: %s",
                        self.route.name, entry.sop_instance_uid, attempts, result.reason,
                    )  # fmt: skip
                else:
                    wait = min(FIRST_BACKOFF * 2 ** (attempts - 1), self.route.max_backoff)
                    updates.append((entry, EntryState.PENDING, attempts, now + wait, result.reason))
            else:
                updates.append(
                    (entry, EntryState.PENDING, entry.attempts, now + FIRST_BACKOFF, result.reason)
                )
        self.queue.record(updates)

    def _down(self, reason: str, now: float, cause: DownCause) -> None:
        self.down_count += 1
        self._destination = None  # built afresh: a node's address may have changed
        wait = min(FIRST_BACKOFF * 2 ** (self.down_count - 1), self.route.max_backoff)
        self.down_until = now + wait
        changed = cause is not self.report.down_cause  # e.g. reachable now, but refusing our token
        self.report.down, self.report.down_cause = reason, cause
        if self.down_count == 1 or changed:
            LOG.warning("route %s: cannot deliver: %s; trying again with back-off", self.route.name, reason)
        self._write_status(
            {
                "down": reason,
                "cause": cause.value,
                "failures": self.down_count,
                "next_try": round(self.down_until, 3),
            }  # fmt: skip
        )

    def _where(self) -> str:
        return self._destination.where if self._destination else self.route.to

    def _write_status(self, status: dict[str, Any] | None) -> None:
        path = self.queue.dir / STATUS_NAME
        try:
            if status is None:
                path.unlink(missing_ok=True)
            else:
                files.ensure_dir(self.queue.dir)
                files.write_atomic(self.root / "tmp", path, json.dumps(status).encode())
        except OSError as exc:
            LOG.warning("route %s: cannot write its status: %s", self.route.name, exc.strerror or exc)


def read_status(root: Path, route: str) -> dict[str, Any]:
    """The destination's state as its forwarder last wrote it ({} while it is fine)."""
    try:
        return dict(json.loads((RouteQueue(root, route).dir / STATUS_NAME).read_text()))
    except (OSError, ValueError):
        return {}


class RouteLock:
    """The one-forwarder-per-route lock, held while a forwarder works on the route."""

    def __init__(self, root: Path, route: str) -> None:
        self.path = RouteQueue(root, route).dir / FORWARDER_LOCK
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock if nobody holds it."""
        files.ensure_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, files.FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def run_once(
    root: Path, names: list[str] | None = None, factory: DestinationFactory = destination_for
) -> list[RouteReport]:
    """Deliver what is due now on every route (or those named), each until nothing is due or
    its destination cannot be reached. Back-off waits are skipped (a run is a try now: the
    interval between runs is the back-off) and each entry is tried once per run."""
    config = load_config(root / CONFIG_NAME)
    reports = []
    for name, route in sorted(config.routes.items()):
        if names and name not in names:
            continue
        lock = RouteLock(root, name)
        forwarder = RouteForwarder(root, route, config, factory)
        if not lock.acquire():
            forwarder.queue.refresh()
            forwarder.report.busy = True
            forwarder.report.pending = forwarder.queue.counts()["pending"]
            reports.append(forwarder.report)
            continue
        try:
            while True:
                forwarder.step(ignore_backoff=True)
                if forwarder.report.down:
                    break
                due = forwarder.queue.due(time.time(), route.delay, ignore_next_try=True)
                if not [e for e in due if e.key not in forwarder.tried]:
                    break
            forwarder.queue.compact()
            forwarder.report.pending = forwarder.queue.counts()["pending"]
        finally:
            lock.release()
        reports.append(forwarder.report)
    return reports


class Forwarder:
    """Every route of an archive, each in a thread of its own, until `stop` is set. Routes
    added or removed in the config are taken up within a second."""

    def __init__(self, root: Path, factory: DestinationFactory = destination_for) -> None:
        self.root = root
        self.factory = factory
        self._threads: dict[str, tuple[threading.Thread, threading.Event, Route]] = {}

    def run(self, stop: threading.Event) -> None:
        """Forward until `stop` is set; then let each route finish its round."""
        mtime = None
        config = Config()
        try:
            while not stop.is_set():
                try:
                    current = os.stat(self.root / CONFIG_NAME).st_mtime_ns
                    if current != mtime:
                        config = load_config(self.root / CONFIG_NAME)
                        mtime = current
                        self._follow(config)
                except (OSError, PacsctlError) as exc:
                    LOG.error("routes: cannot read the config: %s", exc)
                stop.wait(1.0)
        finally:
            self._follow(None)

    def _follow(self, config: Config | None) -> None:
        wanted = config.routes if config else {}
        for name, (thread, done, route) in list(self._threads.items()):
            if wanted.get(name) != route:
                done.set()
                thread.join(60)
                del self._threads[name]
        for name, route in wanted.items():
            if name not in self._threads and config is not None:
                done = threading.Event()
                thread = threading.Thread(
                    target=self._route_loop, args=(route, config, done), name=f"route-{name}", daemon=True
                )
                self._threads[name] = (thread, done, route)
                thread.start()

    def _route_loop(self, route: Route, config: Config, done: threading.Event) -> None:
        lock = RouteLock(self.root, route.name)
        while not lock.acquire():  # `route run` is at it: wait for our turn
            if done.wait(1.0):
                return
        try:
            forwarder = RouteForwarder(self.root, route, config, self.factory)
            while not done.is_set():
                try:
                    wait = forwarder.step()
                except Exception as exc:  # noqa: BLE001 - one bad round must not end the route
                    LOG.error("route %s: %s", route.name, exc)
                    wait = POLL
                if wait:
                    done.wait(wait)
        finally:
            lock.release()
