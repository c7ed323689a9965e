"""The serve node's group commit: two durability barriers per instance, shared between stores
that overlap (one barrier makes one store's names durable and the next store's data)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pacsctl.archive.archive import Archive
from pacsctl.archive.commit import GroupCommitter
from pacsctl.net.types import STATUS_OUT_OF_RESOURCES
from pacsctl.errors import StorageFullError
from tests.storage.checks import consistency, object_files


class RecordedSync:
    """Wraps `Archive.sync`: records each barrier's batches as (SOPInstanceUID, named) and
    holds the first barrier until `release` is set, so a second store can arrive meanwhile."""

    def __init__(self, archive: Archive, fail_at: int | None = None) -> None:
        self.real = archive.sync
        self.rounds: list[list[tuple[str, bool]]] = []
        self.release = threading.Event()
        self.fail_at = fail_at

    def __call__(self, batches) -> None:
        batches = list(batches)
        self.rounds.append([(b.staged[0][1].sop_instance_uid, b.named) for b in batches])
        if len(self.rounds) == 1:
            assert self.release.wait(10)
        if len(self.rounds) == self.fail_at:
            raise StorageFullError("the archive's disk is full")  # what Archive.sync makes of ENOSPC
        self.real(batches)


def _two_overlapping_stores(archive_dir: Path, ct_factory, fail_at: int | None = None):
    archive = Archive.open(archive_dir)
    sync = RecordedSync(archive, fail_at)
    archive.sync = sync  # type: ignore[method-assign]
    committer = GroupCommitter(archive, threading.Lock())
    a, b = ct_factory(sop_uid="1.2.3.1"), ct_factory(sop_uid="1.2.3.2")
    statuses: dict[str, int] = {}

    def store(path: Path) -> None:
        statuses[path.name] = committer.submit(path.read_bytes(), f"test:{path.name}")

    first = threading.Thread(target=store, args=(a,))
    first.start()
    deadline = time.monotonic() + 10
    while not sync.rounds and time.monotonic() < deadline:
        time.sleep(0.001)
    second = threading.Thread(target=store, args=(b,))
    second.start()
    while not committer._staged and time.monotonic() < deadline:  # b waits for the next barrier
        time.sleep(0.001)
    sync.release.set()
    first.join(10)
    second.join(10)
    archive.close()
    return sync.rounds, [statuses[a.name], statuses[b.name]]


def test_an_overlapping_store_shares_the_barrier_of_the_previous_ones_names(archive_dir: Path, ct_factory) -> None:
    rounds, statuses = _two_overlapping_stores(archive_dir, ct_factory)
    assert statuses == [0, 0]
    assert rounds == [
        [("1.2.3.1", False)],                      # a's data
        [("1.2.3.2", False), ("1.2.3.1", True)],   # b's data and a's names: one barrier
        [("1.2.3.2", True)],                       # b's names
    ]
    assert len(object_files(archive_dir)) == 2
    assert consistency(archive_dir) == []


def test_a_failed_shared_barrier_fails_both_stores_and_leaves_no_temp_file(archive_dir: Path, ct_factory) -> None:
    rounds, statuses = _two_overlapping_stores(archive_dir, ct_factory, fail_at=2)
    assert statuses == [STATUS_OUT_OF_RESOURCES, STATUS_OUT_OF_RESOURCES]
    assert len(rounds) == 2
    assert [p for p in (archive_dir / "tmp").iterdir()] == []
    # a was named before the failed barrier: its file may stay (never acknowledged); the
    # sender's retry finds it, journals it again and answers Success, with no second copy
    archive = Archive.open(archive_dir)
    committer = GroupCommitter(archive, threading.Lock())
    for path in sorted((archive_dir.parent / "ct").rglob("*.dcm")):
        assert committer.submit(path.read_bytes(), "test:retry") == 0
    archive.close()
    assert len(object_files(archive_dir)) == 2
    assert consistency(archive_dir) == []
