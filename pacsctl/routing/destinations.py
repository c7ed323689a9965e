"""Where a route delivers: a DICOM node (C-STORE), a DICOMweb server (STOW-RS), a bucket.

A destination takes a batch of outbox entries and says, per entry, what the far side confirmed:
delivered (C-STORE Success or Warning; the instance named in the STOW response), refused (a
failure status, a STOW failure: counts towards the dead-letter list) or not sent (no fault of
the instance). A destination that cannot be reached at all raises DestinationDown: nothing is
counted against the entries, the route backs off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from pacsctl.config import Config, Route, parse_node_spec
from pacsctl.errors import NetworkError
from pacsctl.routing.queue import Entry
from pacsctl.routing.stow import AuthKind, HttpAuth, StowClient, StowError, StowFailure

STOW_BATCH_BYTES = 32 << 20  # one STOW request's body is built in memory


class Delivery(Enum):
    """What the destination confirmed for one entry."""

    DELIVERED = "delivered"
    REFUSED = "refused"  # counts as a failed attempt
    NOT_SENT = "not_sent"  # tried again later, not counted


@dataclass(frozen=True)
class Delivered:
    """One entry's delivery, with the reason when it did not arrive."""

    delivery: Delivery
    reason: str = ""
    final: bool = False  # a refusal that no retry can change: a dead letter at once


class DownCause(Enum):
    """Why a destination is down (kept in the route's status for `route status`)."""

    UNREACHABLE = "unreachable"  # no connection, no answer, a bucket or node that is not there
    SERVER = "server"  # it answered, but cannot take anything now (5xx, busy)
    AUTH = "auth"  # it refuses our credentials (HTTP 401/403)
    SECRET = "secret"  # our credentials' file cannot be read: nothing was sent


class DestinationDown(Exception):
    """The destination cannot be reached (or cannot take anything now): back off, retry."""

    def __init__(self, message: str, cause: DownCause = DownCause.UNREACHABLE) -> None:
        super().__init__(message)
        self.cause = cause


_DOWN_CAUSE = {
    StowFailure.UNREACHABLE: DownCause.UNREACHABLE,
    StowFailure.SERVER: DownCause.SERVER,
    StowFailure.AUTH: DownCause.AUTH,
    StowFailure.SECRET: DownCause.SECRET,
}


class Destination(Protocol):
    """Delivers batches of outbox entries; `where` names it for people (no credentials)."""

    where: str

    def deliver(self, entries: list[Entry]) -> dict[str, Delivered]:
        """Per entry key, what the destination confirmed. Raises DestinationDown."""
        ...


class DicomDestination:
    """C-STORE to a node (a name from `pacsctl nodes`, or AET@host:port), through `remote.send`
    (one association per batch, peers' refusals accounted per file)."""

    def __init__(self, root: Path, node_spec: str, config: Config, timeout: float = 30.0) -> None:
        self.root = root
        self.node = parse_node_spec(node_spec, config)
        self.calling_aet = config.ae_title
        self.timeout = timeout
        self.where = str(self.node)

    def deliver(self, entries: list[Entry]) -> dict[str, Delivered]:
        from pacsctl.remote.send import SendItem, SendOutcome, send

        by_path: dict[str, list[Entry]] = {}
        for entry in entries:
            by_path.setdefault(str(self.root / entry.path), []).append(entry)
        out: dict[str, Delivered] = {}

        def on_outcome(outcome: SendOutcome) -> None:
            if outcome.ok:
                result = Delivered(Delivery.DELIVERED)
            elif outcome.interrupted or outcome.unreached:
                # a link that broke (or a node gone mid-association) is no fault of the
                # instance: no attempt counted, no dead letter. An instance sent whole and
                # left unanswered even alone (a peer that aborts on it) still counts.
                result = Delivered(Delivery.NOT_SENT, outcome.reason or "not sent")
            else:
                result = Delivered(Delivery.REFUSED, outcome.reason or "refused")
            for entry in by_path.get(outcome.path, []):
                out[entry.key] = result

        items = [SendItem(path, by_path[path][0].size) for path in by_path]
        try:
            send(self.node, items, self.calling_aet, on_outcome=on_outcome, timeout=self.timeout)
        except NetworkError as exc:
            raise DestinationDown(str(exc)) from None
        return out


class StowDestination:
    """STOW-RS to a DICOMweb service (`https://host/.../dicom-web`)."""

    def __init__(
        self, root: Path, base_url: str, timeout: float = 60.0, auth: HttpAuth | None = None
    ) -> None:
        self.root = root
        self.client = StowClient(base_url, timeout=timeout, auth=auth)
        self.where = self.client.where

    def deliver(self, entries: list[Entry]) -> dict[str, Delivered]:
        out: dict[str, Delivered] = {}
        batch: list[tuple[Entry, bytes]] = []
        size = 0
        for entry in entries:
            try:
                data = (self.root / entry.path).read_bytes()
            except OSError as exc:
                out[entry.key] = Delivered(Delivery.REFUSED, f"cannot read the archived file: {exc.strerror}")
                continue
            if batch and size + len(data) > STOW_BATCH_BYTES:
                break  # the rest goes in the next round
            batch.append((entry, data))
            size += len(data)
        if not batch:
            return out
        try:
            answer = self.client.store([data for _, data in batch])
        except StowError as exc:
            if exc.failure is StowFailure.REFUSED:
                return out | {e.key: Delivered(Delivery.REFUSED, str(exc)) for e, _ in batch}
            raise DestinationDown(str(exc), _DOWN_CAUSE[exc.failure]) from None
        for entry, _ in batch:
            if entry.sop_instance_uid in answer.stored:
                out[entry.key] = Delivered(Delivery.DELIVERED)
            else:
                why = answer.failed.get(entry.sop_instance_uid, "not in the STOW response")
                out[entry.key] = Delivered(Delivery.REFUSED, f"{self.where}: {why}")
        return out


DestinationFactory = Callable[[Path, Route, Config], Destination]


def route_auth(route: Route) -> HttpAuth | None:
    """The route's DICOMweb credentials (None without)."""
    if route.token_file:
        return HttpAuth(AuthKind.BEARER, Path(route.token_file))
    if route.password_file:
        return HttpAuth(AuthKind.BASIC, Path(route.password_file), route.user)
    return None


def destination_for(root: Path, route: Route, config: Config) -> Destination:
    """The destination a route names (UsageError for a node that is not known)."""
    to = route.to
    destination: Destination
    if to.startswith(("http://", "https://")):
        destination = StowDestination(root, to, auth=route_auth(route))
    elif to.startswith("s3://"):
        from pacsctl.routing.bucket import BucketDestination

        destination = BucketDestination(root, to)
    else:
        destination = DicomDestination(root, to, config)
    if route.anonymize:
        from pacsctl.routing.anonymized import AnonymizingDestination

        return AnonymizingDestination(root, route, destination)
    return destination
