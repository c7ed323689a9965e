"""The read-back check of a folder export: a file whose bytes on the device are not the ones
written is named, left out of the export and of its manifest."""

from __future__ import annotations

import os
from pathlib import Path

from pacsctl.export.target import MANIFEST_NAME, FolderTarget


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
