"""`import --dry-run` predicts the real run, duplicates and conflicts inside one batch included.

It said "would import 65, quarantined 2" where the run gave "imported 63, duplicates 1,
quarantined 3": each input was planned against the archive on disk alone.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest

from pacsctl.archive.archive import Archive
from pacsctl.ingest import importer
from pacsctl.ingest.importer import collect_sources, import_sources
from tests.storage.trees import messy_tree

COUNTS = ("files", "imported", "duplicates", "quarantined", "skipped", "unreadable", "missing")


def _counts(summary) -> tuple[int, ...]:
    return tuple(getattr(summary, k) for k in COUNTS)


def _messier_tree(root: Path, testdata_dir: Path, ct_factory) -> None:
    """The messy tree plus the repeats a pile of CDs brings: the same file twice, the same
    image behind another writer's File Meta, and a different image under a UID already used,
    inside one batch and across batches."""
    messy_tree(root, testdata_dir)
    twins = root / "twins"
    original = ct_factory(pixel_seed=1)
    uid = pydicom.dcmread(original).SOPInstanceUID
    twins.mkdir()
    shutil.copy(original, twins / "a.dcm")
    shutil.copy(original, twins / "b.dcm")  # identical: a duplicate
    ds = pydicom.dcmread(original)
    ds.file_meta.ImplementationClassUID = "1.2.3.4.5.6.7"
    ds.file_meta.SourceApplicationEntityTitle = "OTHERPACS"
    ds.save_as(twins / "c.dcm", enforce_file_format=True)  # same data set: a duplicate
    ct_factory("d.dcm", directory=twins, sop_uid=uid, pixel_seed=2)  # other pixels: a conflict
    later = root / "zz-later"  # walked last: another batch when batches are small
    later.mkdir()
    shutil.copy(original, later / "again.dcm")
    ct_factory("clash.dcm", directory=later, sop_uid=uid, pixel_seed=3)


@pytest.mark.parametrize("policy", ["keep", "replace"])
@pytest.mark.parametrize("batch_files", [64, 3])
def test_dry_run_counts_equal_the_real_run(tmp_path: Path, testdata_dir: Path, ct_factory, monkeypatch,
                                           policy: str, batch_files: int) -> None:
    monkeypatch.setattr(importer, "BATCH_FILES", batch_files)
    root = tmp_path / "incoming"
    root.mkdir()
    _messier_tree(root, testdata_dir, ct_factory)
    sources = collect_sources([str(root)])
    archive_dir = tmp_path / "archive"
    with Archive.for_dry_run(archive_dir) as planning:
        dry = import_sources(planning, sources, on_conflict=policy, dry_run=True, jobs=2)
    assert not archive_dir.exists()
    with Archive.open(archive_dir) as archive:
        real = import_sources(archive, sources, on_conflict=policy, jobs=1)
    assert _counts(dry) == _counts(real)
    if policy == "keep":  # b.dcm, c.dcm and zz-later/again.dcm; the messy tree's 4, d and clash
        assert (real.duplicates, real.quarantined) == (3, 6)
    else:  # d replaced a.dcm, so again.dcm (a.dcm's bytes) replaces d in turn, then clash
        assert (real.duplicates, real.quarantined) == (2, 4)
    # and once it ran, a dry run of the same input predicts all duplicates, like a re-run
    with Archive.open(archive_dir) as archive:
        again = import_sources(archive, sources, on_conflict=policy, dry_run=True)
        rerun = import_sources(archive, sources, on_conflict=policy)
    assert _counts(again) == _counts(rerun)
