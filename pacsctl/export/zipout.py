"""An export as one zip file: members stored (DICOM pixel data barely deflates and `pacsctl
import` reads stored members in place), written as a stream, ZIP64 where a member or the
archive passes 4 GB, read back member by member before the file gets DEST's name.

`import` takes the zip as it is: every member's bytes are the archived file's.
"""

from __future__ import annotations

import hashlib
import os
import time
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from pacsctl.export.target import (
    CHUNK,
    MANIFEST_NAME,
    Finished,
    SizeMismatch,
    Written,
    check_dest,
    manifest_text,
    partial_path,
)
from pacsctl.storage import files

_ZIP64_LIMIT = zipfile.ZIP64_LIMIT
_IN_MEMORY = 64 << 20  # a file up to this size is read once, checked, then written


class ZipTarget:
    """A zip export being written beside DEST (same contract as `target.FolderTarget`)."""

    def __init__(self, dest: Path) -> None:
        check_dest(dest)
        self.dest = dest
        self._stamp = time.localtime()[:6]
        self._removed: set[str] = set()
        self._open()

    def _open(self) -> None:
        self.path = partial_path(self.dest)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, files.FILE_MODE)
        self._file = os.fdopen(fd, "wb")
        self._zip = zipfile.ZipFile(self._file, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def _info(self, relpath: str, size: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(relpath, date_time=self._stamp)
        info.compress_type = zipfile.ZIP_STORED
        info.file_size = size  # known up front: ZIP64 headers exactly when a member needs them
        info.external_attr = (0o100000 | files.FILE_MODE) << 16
        return info

    def copy_file(self, relpath: str, source: Path) -> Written:
        """Stream `source` into the member `relpath`, hashing it."""
        size = os.stat(source).st_size
        with open(source, "rb", buffering=0) as src:
            return self._write(relpath, size, iter(lambda: src.read(CHUNK), b""))

    def copy_verbatim(self, relpath: str, source: Path, size: int, sha256: str) -> Written:
        """Add an archived file, checked against its ingest record before it goes in (a zip
        cannot take a member out again): read whole when small, else hashed in a first pass."""
        if size <= _IN_MEMORY:
            data = source.read_bytes()
            if (len(data), hashlib.sha256(data).hexdigest()) != (size, sha256):
                raise SizeMismatch(relpath)
            return self.write_bytes(relpath, data)
        if files.sha256_file(source) != (size, sha256):
            raise SizeMismatch(relpath)
        return self.copy_file(relpath, source)

    def write_bytes(self, relpath: str, data: bytes) -> Written:
        """The member `relpath` holding `data`."""
        return self._write(relpath, len(data), [data])

    def _write(self, relpath: str, size: int, chunks: Iterable[bytes]) -> Written:
        digest = hashlib.sha256()
        written = 0
        with self._zip.open(self._info(relpath, size), "w", force_zip64=size >= _ZIP64_LIMIT) as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
        return Written(relpath, written, digest.hexdigest())

    def remove(self, written: Written) -> None:
        """Take a member out (its source turned out damaged): `finish` writes the zip again
        without it (a zip cannot drop a member in place)."""
        self._removed.add(written.relpath)

    def finish(self, written: list[Written]) -> Finished:
        """Write the manifest, close and flush the zip, read every member back (CRC and hash),
        and rename the file into place. When members were removed or did not read back, the
        zip is written again without them (their bytes must not ship under DEST's name), and
        read back again."""
        good = [w for w in written if w.relpath not in self._removed]
        manifest = self._close(good)
        bad = self._read_back(good)
        if bad or self._removed:
            failed = {w.relpath for w, _ in bad}
            good = [w for w in good if w.relpath not in failed]
            manifest = self._rewrite(good)
            bad += self._read_back(good)
        os.rename(self.path, self.dest)
        files.fsync_dir(self.dest.parent)
        return Finished(manifest, bad)

    def _close(self, good: list[Written]) -> Written:
        """Add the manifest of `good`, close the zip and make it durable, its cached pages
        dropped (the read-back then reads the device)."""
        manifest = self.write_bytes(MANIFEST_NAME, manifest_text(good))
        self._zip.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        self._file.close()
        return manifest

    def _rewrite(self, good: list[Written]) -> Written:
        """A fresh zip beside DEST holding only the members `good`, copied from the first one
        (each member's CRC checked as it is read), with their manifest; the first is removed."""
        first = self.path
        self._open()
        with zipfile.ZipFile(first) as old:
            for w in good:
                with old.open(w.relpath) as member:
                    self._write(w.relpath, w.size, _chunks(member))
        first.unlink()
        return self._close(good)

    def _read_back(self, good: list[Written]) -> list[tuple[Written, str]]:
        bad = []
        with zipfile.ZipFile(self.path) as zf:
            for w in good:
                digest = hashlib.sha256()
                try:
                    with zf.open(w.relpath) as member:  # zipfile checks the CRC at the end
                        while chunk := member.read(CHUNK):
                            digest.update(chunk)
                except (OSError, zipfile.BadZipFile, KeyError) as exc:
                    bad.append((w, f"cannot be read back from the zip ({type(exc).__name__})"))
                    continue
                if digest.hexdigest() != w.sha256:
                    bad.append((w, "read back different bytes than were written"))
        return bad

    def abort(self) -> None:
        """Remove the incomplete zip."""
        try:
            self._zip.close()
            self._file.close()
        except (OSError, ValueError):
            pass
        self.path.unlink(missing_ok=True)


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk
