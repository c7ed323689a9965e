"""Where an export's files go: a folder (or a zip, `zipout`) written beside DEST under a name
that says it is incomplete, read back, and only then given DEST's name.

A killed export leaves `.NAME.PID-XXXX.partial` beside DEST (removed by the next export to the
same DEST once its writer is gone), never a DEST that looks complete. Every file is hashed as it
is written; `finish` makes the files durable, reads each one back from the disk (its cached
pages dropped first) and compares the hash, writes `MANIFEST.sha256` (`sha256sum -c` reads it)
and renames the folder into place.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pacsctl.errors import UsageError
from pacsctl.storage import files

MANIFEST_NAME = "MANIFEST.sha256"
CHUNK = 1 << 20
PARTIAL_SUFFIX = ".partial"
READ_BACK_THREADS = 4  # reads and hashing release the GIL


@dataclass(frozen=True)
class Written:
    """One file of the export: where, how big, and the SHA-256 of the bytes written."""

    relpath: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Finished:
    """A placed export: its manifest, and the files that did not read back as written."""

    manifest: Written
    bad: list[tuple[Written, str]]


class SizeMismatch(Exception):
    """A copied file's size is not the one its ingest record gives (the archive is damaged)."""


class Target(Protocol):
    """What every export writer offers (folder, zip)."""

    def copy_file(self, relpath: str, source: Path) -> Written: ...

    def copy_verbatim(self, relpath: str, source: Path, size: int, sha256: str) -> Written: ...

    def write_bytes(self, relpath: str, data: bytes) -> Written: ...

    def remove(self, written: Written) -> None: ...

    def finish(self, written: list[Written]) -> Finished: ...

    def abort(self) -> None: ...


def manifest_text(written: Iterable[Written]) -> bytes:
    """`sha256sum` format: one `HASH  PATH` line per file, sorted by path."""
    return "".join(f"{w.sha256}  {w.relpath}\n" for w in sorted(written, key=lambda w: w.relpath)).encode()


def partial_path(dest: Path) -> Path:
    """A fresh incomplete name beside `dest`, with the writer's pid (so leftovers can be told)."""
    return dest.parent / f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PARTIAL_SUFFIX}"


def check_dest(dest: Path) -> None:
    """Refuse a DEST that exists (an empty folder is fine); remove leftovers of dead exports."""
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise UsageError(f"{dest} exists", hint="export into a new name; nothing was written")
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent} is not a folder", hint="create it first")
    for leftover in dest.parent.glob(f".{dest.name}.*-*{PARTIAL_SUFFIX}"):
        pid = leftover.name[len(dest.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_back(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of `path` as the disk holds it: its cached pages are dropped first (after
    the caller made it durable), so the bytes come from the device, not from memory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        digest = hashlib.sha256()
        size = 0
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return size, digest.hexdigest()


class FolderTarget:
    """An export folder being written (see the module docstring)."""

    def __init__(self, dest: Path) -> None:
        check_dest(dest)
        self.dest = dest
        self.root = partial_path(dest)
        os.mkdir(self.root, files.DIR_MODE)
        self._dirs: set[str] = {""}

    def _open(self, relpath: str) -> int:
        folder = os.path.dirname(relpath)
        if folder not in self._dirs:  # threads may race here: makedirs(exist_ok) takes that
            os.makedirs(self.root / folder, files.DIR_MODE, exist_ok=True)
            self._dirs.add(folder)
        return os.open(self.root / relpath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, files.FILE_MODE)

    def copy_file(self, relpath: str, source: Path) -> Written:
        """Copy `source` to `relpath`, hashing what is written."""
        with open(source, "rb", buffering=0) as src:
            return self._write(relpath, iter(lambda: src.read(CHUNK), b""))

    def copy_verbatim(self, relpath: str, source: Path, size: int, sha256: str) -> Written:
        """Copy an archived file known by its ingest record (`size`, `sha256`) in the kernel
        (copy_file_range: no pass through Python); the read-back in `finish` compares what the
        disk holds with `sha256`, which checks the archived file and the copy in one pass."""
        fd = self._open(relpath)
        try:
            with open(source, "rb", buffering=0) as src:
                copied = _kernel_copy(src.fileno(), fd)
        except BaseException:
            os.close(fd)
            (self.root / relpath).unlink(missing_ok=True)
            raise
        os.close(fd)
        if copied != size:
            (self.root / relpath).unlink(missing_ok=True)
            raise SizeMismatch(relpath)
        return Written(relpath, size, sha256)

    def write_bytes(self, relpath: str, data: bytes) -> Written:
        """Write `data` to `relpath`."""
        return self._write(relpath, [data])

    def _write(self, relpath: str, chunks: Iterable[bytes]) -> Written:
        digest = hashlib.sha256()
        size = 0
        fd = self._open(relpath)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                digest.update(chunk)
                size += len(chunk)
        except BaseException:
            os.close(fd)
            (self.root / relpath).unlink(missing_ok=True)
            raise
        os.close(fd)
        return Written(relpath, size, digest.hexdigest())

    def remove(self, written: Written) -> None:
        """Take a written file out again (its source turned out damaged)."""
        (self.root / written.relpath).unlink(missing_ok=True)

    def rename(self, relpath: str, new_relpath: str) -> None:
        """Move a written file to another name in the export (DICOM media's file IDs)."""
        folder = os.path.dirname(new_relpath)
        if folder not in self._dirs:
            os.makedirs(self.root / folder, files.DIR_MODE, exist_ok=True)
            self._dirs.add(folder)
        os.rename(self.root / relpath, self.root / new_relpath)

    def remove_dir(self, relpath: str) -> None:
        """Remove an emptied folder of the export."""
        os.rmdir(self.root / relpath)
        self._dirs.discard(relpath)

    def finish(self, written: list[Written]) -> Finished:
        """Make everything durable, read it back, write the manifest of what read back right,
        and move the folder into place. The files that did not read back are removed."""
        self._sync()
        with ThreadPoolExecutor(max_workers=READ_BACK_THREADS) as pool:
            results = list(pool.map(lambda w: (w, _read_back_problem(self.root / w.relpath, w)), written))
        bad = [(w, problem) for w, problem in results if problem]
        for w, _ in bad:
            self.remove(w)
        good = [w for w, problem in results if not problem]
        manifest = self.write_bytes(MANIFEST_NAME, manifest_text(good))
        self._sync()
        self._place()
        return Finished(manifest, bad)

    def _sync(self) -> None:
        if not files.syncfs(self.root):
            files.make_durable(p for p in self.root.rglob("*") if p.is_file())
            for folder in sorted(self._dirs, key=len, reverse=True):
                files.fsync_dir(self.root / folder)

    def _place(self) -> None:
        if self.dest.is_dir():
            self.dest.rmdir()  # the empty folder check_dest allowed; rename needs it gone or empty
        os.rename(self.root, self.dest)
        files.fsync_dir(self.dest.parent)

    def abort(self) -> None:
        """Remove the incomplete folder (an error or Ctrl-C: nothing is left behind)."""
        shutil.rmtree(self.root, ignore_errors=True)


# copy_file_range refuses some pairs of file systems (EXDEV before Linux 5.19: an archive on
# ext4, a USB stick on vfat) and some file systems altogether: then the bytes go through here.
_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM})


def _kernel_copy(src: int, dst: int) -> int:
    """Copy `src` to `dst` (both at offset 0) in the kernel when it can, else by reads and
    writes; the bytes copied."""
    copied = 0
    try:
        while n := os.copy_file_range(src, dst, CHUNK << 4):
            copied += n
        return copied
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY or copied:
            raise
    while chunk := os.read(src, CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        copied += len(chunk)
    return copied


def _read_back_problem(path: Path, written: Written) -> str:
    try:
        size, sha256 = read_back(path)
    except OSError as exc:
        return f"cannot be read back: {os.strerror(exc.errno or errno.EIO)}"
    if (size, sha256) != (written.size, written.sha256):
        return "read back different bytes than were written"
    return ""
