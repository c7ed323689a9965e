"""Read one import input with bounded memory: its first bytes first, then small inputs into
memory and large ones streamed into a temp file and mapped.

A zip member used to be read whole before anything looked at it: a 2 MB zip holding a 2 GiB
member of zeros took minutes and gigabytes of memory to be skipped as "not DICOM". Now the
first bytes decide whether it is DICOM at all, the size limit (`max_instance_size`) is checked
before reading on, and an input larger than STREAM_ABOVE is copied in chunks to a temp file
that the archive links into place as is (no second write) and that is parsed through a memory
map (only the header's pages are touched).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pacsctl.archive.archive import SKIPPED, IngestResult
from pacsctl.dicom.instance import looks_like_dicom
from pacsctl.ingest.sources import Source
from pacsctl.storage import files

STREAM_ABOVE = 16 << 20  # inputs up to this size are read into memory; larger ones streamed
_HEAD = 132  # preamble + "DICM": enough for `looks_like_dicom`
_CHUNK = 1 << 20


@dataclass
class Loaded:
    """An input ready for `Archive.ingest`: `item` is (bytes or a read-only map, origin) or, when
    streamed, (map, origin, the temp file holding exactly those bytes)."""

    item: tuple
    staged: files.StagedFile | None = None
    mapping: mmap.mmap | None = None

    def close(self) -> None:
        """Unmap, and remove the temp file unless the archive took it (linked, moved)."""
        if self.mapping is not None:
            self.mapping.close()
        if self.staged is not None:
            self.staged.temp_path.unlink(missing_ok=True)


class _TooLarge(Exception):
    pass


def read_source(source: Source, spill_dir: Path, limit: int) -> Loaded | IngestResult:
    """Read `source` for ingest; an IngestResult (skipped) when its first bytes are not DICOM or
    it is larger than `limit`. Streams spill into `spill_dir` (the archive's tmp/, on the same
    file system as objects/). Raises OSError or sources.ZIP_ERRORS when it cannot be read."""
    with source.open() as stream:
        head = _read_up_to(stream, _HEAD)
        if not looks_like_dicom(head):
            return IngestResult(SKIPPED, source.origin, reason="not a DICOM file" if head else "empty file")
        if source.size > limit:
            return _too_large(source, limit, f": {format_size(source.size)}")
        rest = _read_up_to(stream, STREAM_ABOVE + 1 - len(head))
        if len(head) + len(rest) <= STREAM_ABOVE:
            return Loaded((head + rest, source.origin))
        try:
            staged = files.stage(spill_dir, _chunks(stream, head + rest, limit), fsync=False)
        except _TooLarge:  # it grew past the limit while read (or a member lied about its size)
            return _too_large(source, limit, "")
    try:
        with open(staged.temp_path, "rb") as fh:
            mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        staged.temp_path.unlink(missing_ok=True)
        raise
    return Loaded((mapping, source.origin, staged), staged, mapping)


def _chunks(stream: BinaryIO, first: bytes, limit: int) -> Iterator[bytes]:
    size = len(first)
    yield first
    while chunk := stream.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        yield chunk


def _read_up_to(stream: BinaryIO, count: int) -> bytes:
    """Up to `count` bytes (fewer only at the end: a zip member may return short reads)."""
    parts, left = [], count
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _too_large(source: Source, limit: int, size_text: str) -> IngestResult:
    return IngestResult(
        SKIPPED,
        source.origin,
        unreadable=True,
        reason=(
            f"larger than max_instance_size ({format_size(limit)}){size_text}; "
            "raise the limit with `pacsctl config set max_instance_size SIZE`"
        ),
    )


def format_size(size: int) -> str:
    """Bytes for people: 512 MiB, 2 GiB, 1.5 GiB."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def spill_dir_for(archive_tmp: Path, dry_run: bool) -> Path:
    """Where streamed inputs go: the archive's tmp/ (then linked into place), or for a dry run,
    which writes nothing into the archive, the system's temp folder."""
    if dry_run:
        import tempfile

        return Path(tempfile.gettempdir())
    return archive_tmp
