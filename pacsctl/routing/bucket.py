"""A route to an S3-compatible bucket: each instance PUT as `PREFIX/STUDY/SERIES/SOP.dcm`.

Through `storage.objects` (credentials the AWS way, never logged): the bytes sent must hash to
the SHA-256 recorded at ingest, and the object carries that hash in its metadata. A PUT that
returned is delivered; a store that cannot be reached or refuses the credentials is down (the
route backs off); damaged local bytes, or another refusal of one object, count as a refusal.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pacsctl.routing.destinations import Delivered, Delivery, DestinationDown, DownCause
from pacsctl.routing.queue import Entry
from pacsctl.storage.files import safe_file_name
from pacsctl.storage.objects import ObjectStore, ObjectStoreError, ObjectStoreFailure

UPLOADS = 4  # PUTs in flight at once: per-request latency, not bandwidth, limits small objects
_DOWN = (ObjectStoreFailure.NETWORK, ObjectStoreFailure.AUTH, ObjectStoreFailure.NO_BUCKET)


def object_relpath(entry: Entry) -> str:
    """Where an entry's instance goes under the route's prefix."""
    parts = (entry.study_uid or "unknown", entry.series_uid or "unknown", entry.sop_instance_uid)
    return "/".join(safe_file_name(p) for p in parts) + ".dcm"


class BucketDestination:
    """PUTs to `s3://BUCKET/PREFIX`."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        try:
            self.store = ObjectStore(url, max_connections=UPLOADS)
        except ObjectStoreError as exc:
            raise DestinationDown(str(exc)) from None
        self.where = str(self.store.url)

    def deliver(self, entries: list[Entry]) -> dict[str, Delivered]:
        def put(entry: Entry) -> tuple[Entry, Delivered | ObjectStoreError]:
            try:
                self.store.put_file(
                    object_relpath(entry), self.root / entry.path, expected_sha256=entry.sha256 or None
                )
            except ObjectStoreError as exc:
                if exc.failure in _DOWN:
                    return entry, exc
                return entry, Delivered(Delivery.REFUSED, str(exc))
            except OSError as exc:
                return entry, Delivered(Delivery.REFUSED, f"cannot read the archived file: {exc.strerror}")
            return entry, Delivered(Delivery.DELIVERED)

        out: dict[str, Delivered] = {}
        down: ObjectStoreError | None = None
        with ThreadPoolExecutor(UPLOADS, thread_name_prefix="route-put") as pool:
            for entry, result in pool.map(put, entries):
                if isinstance(result, ObjectStoreError):
                    down = result
                    out[entry.key] = Delivered(Delivery.NOT_SENT, str(result))
                else:
                    out[entry.key] = result
        if down is not None and not any(r.delivery is Delivery.DELIVERED for r in out.values()):
            cause = DownCause.AUTH if down.failure is ObjectStoreFailure.AUTH else DownCause.UNREACHABLE
            raise DestinationDown(str(down), cause)
        return out
