"""A route that de-identifies on the way out (`route add --anonymize --key-file K`).

Each instance is de-identified with `anonymize.Anonymizer` (the Basic Profile, keyed UIDs and
pseudonyms: the same key gives the same UIDs in every batch and after every restart, so the
destination's studies stay whole) into a private temp file in the archive's tmp/, and the
wrapped destination delivers those. The archived original is never changed. An instance the
anonymizer refuses (possibly burned-in text, a leak the residual scan found) is a dead letter
at once, with the reason: trying again would give the same answer.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path

from pacsctl.config import Route
from pacsctl.errors import UsageError
from pacsctl.routing.destinations import Delivered, Delivery, Destination
from pacsctl.routing.queue import Entry
from pacsctl.storage import files


def route_key(route: Route) -> bytes:
    """The route's anonymization secret (UsageError when it has none: a random key per run
    would give other UIDs after every restart)."""
    if route.key_file:
        from pacsctl.anonymize.identity import read_key_file

        return read_key_file(Path(route.key_file))
    if route.key:
        return route.key.encode("utf-8")
    raise UsageError(f"route {route.name!r} anonymizes without a key", hint="give --key-file FILE or --key K")


class AnonymizingDestination:
    """De-identifies each entry's file, then hands the copies to `inner`."""

    def __init__(self, root: Path, route: Route, inner: Destination) -> None:
        from pacsctl.anonymize.deidentify import Anonymizer

        self.root, self.inner = root, inner
        self.anonymizer = Anonymizer(route_key(route))
        self.where = f"{inner.where} (de-identified)"
        self.scratch = root / "tmp" / f"route-{route.name}-{uuid.uuid4().hex[:8]}"

    def deliver(self, entries: list[Entry]) -> dict[str, Delivered]:
        from pacsctl.anonymize.deidentify import Status

        out: dict[str, Delivered] = {}
        copies: list[Entry] = []
        files.ensure_dir(self.scratch, durable=False)
        try:
            for entry in entries:
                try:
                    data = (self.root / entry.path).read_bytes()
                except OSError as exc:
                    out[entry.key] = Delivered(
                        Delivery.REFUSED, f"cannot read the archived file: {exc.strerror}"
                    )
                    continue
                outcome = self.anonymizer.file_bytes(data)
                if outcome.status is not Status.WRITTEN or outcome.data is None:
                    reason = f"not de-identified ({outcome.status}): {outcome.reason}"
                    out[entry.key] = Delivered(Delivery.REFUSED, reason, final=True)
                    continue
                staged = files.stage(self.scratch, [outcome.data], fsync=False)
                copies.append(
                    dataclasses.replace(
                        entry,
                        path=str(staged.temp_path.relative_to(self.root)),
                        size=staged.size,
                        sha256=staged.sha256,
                        sop_instance_uid=outcome.sop_instance_uid,
                        study_uid=outcome.study_instance_uid,
                        series_uid=outcome.series_instance_uid,
                    )
                )
            if copies:
                out.update(self.inner.deliver(copies))
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return out
