"""The read-back check of an export: a file whose bytes on the device are not the ones written
is named, left out of the export and of its manifest (folder and zip)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from pacsctl.export.target import MANIFEST_NAME, FolderTarget
from pacsctl.export.zipout import ZipTarget


def test_a_file_changed_after_it_was_written_fails_the_read_back(tmp_path: Path) -> None:
    source = tmp_path / "source.dcm"
    source.write_bytes(os.urandom(300_000))
    dest = tmp_path / "out"
    target = FolderTarget(dest)
    good = target.copy_file("P1/good.dcm", source)
    bad = target.copy_file("P1/bad.dcm", source)
    with open(target.root / bad.relpath, "r+b") as fh:  # one byte differs from what was written
        fh.seek(123_456)
        byte = fh.read(1)
        fh.seek(123_456)
        fh.write(bytes([byte[0] ^ 0xFF]))

    finished = target.finish([good, bad])

    assert [(w.relpath, why) for w, why in finished.bad] == [
        ("P1/bad.dcm", "read back different bytes than were written")
    ]
    assert (dest / "P1" / "good.dcm").read_bytes() == source.read_bytes()
    assert not (dest / "P1" / "bad.dcm").exists()
    assert (dest / MANIFEST_NAME).read_text() == f"{good.sha256}  P1/good.dcm\n"


def test_a_zip_member_that_does_not_read_back_is_not_shipped(tmp_path: Path) -> None:
    """A zip cannot drop a member in place: it is written again without the bad one."""
    source = tmp_path / "source.dcm"
    source.write_bytes(os.urandom(300_000))
    dest = tmp_path / "out.zip"
    target = ZipTarget(dest)
    bad = target.copy_file("P1/bad.dcm", source)
    good = target.copy_file("P1/good.dcm", source)
    with open(target.path, "r+b") as fh:  # inside the first member's data, already on disk
        fh.seek(100_000)
        byte = fh.read(1)
        fh.seek(100_000)
        fh.write(bytes([byte[0] ^ 0xFF]))

    finished = target.finish([bad, good])

    assert [w.relpath for w, _ in finished.bad] == ["P1/bad.dcm"]
    with zipfile.ZipFile(dest) as zf:
        assert sorted(zf.namelist()) == [MANIFEST_NAME, "P1/good.dcm"]
        assert zf.read("P1/good.dcm") == source.read_bytes()
        assert zf.read(MANIFEST_NAME).decode() == f"{good.sha256}  P1/good.dcm\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
