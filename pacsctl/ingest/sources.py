"""Find the inputs of an import: folders, single files, zip files and DICOMDIR media.

Every input becomes a `Source` (a file, or a member of a zip read in place). Nothing here reads
whole files except a DICOMDIR; problems met while walking (unreadable folders, symlink loops,
broken links, DICOMDIR entries missing from the media) become `Problem`s, so every input is
accounted for and none stops the walk.
"""

from __future__ import annotations

import errno
import os
import stat
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

import pydicom

ZIP_MAGIC = b"PK\x03\x04"
MAX_ZIP_DEPTH = 3  # a zip in a zip in a zip is read; deeper nesting is a zip bomb, not a CD
# What reading a zip member can raise besides OSError (bad CRC, encrypted, unknown method, cut).
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    RuntimeError,
    NotImplementedError,
    EOFError,
    zlib.error,
)


@dataclass(frozen=True)
class Source:
    """One input to read: a file, or `member` of the zip file at `path` (and, for a zip inside
    that zip, the `inner` member names, outermost first)."""

    path: str
    member: str | None = None
    size: int = field(default=0, compare=False)  # bytes, as found while walking (for batching)
    inner: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        """How reports name this input."""
        return "!".join([self.path, *([self.member] if self.member else []), *self.inner])

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The input as a binary stream, read in place (zip members are decompressed as read).
        Raises OSError or one of ZIP_ERRORS when unreadable."""
        with ExitStack() as stack:
            if self.member is None:
                yield stack.enter_context(open(self.path, "rb"))
                return
            archive = stack.enter_context(zipfile.ZipFile(self.path))
            stream = cast(BinaryIO, stack.enter_context(archive.open(self.member)))
            for name in self.inner:  # a member stream is seekable: a zip can be read inside it
                archive = stack.enter_context(zipfile.ZipFile(stream))
                stream = cast(BinaryIO, stack.enter_context(archive.open(name)))
            yield stream

    def read(self) -> bytes:
        """The input's bytes (raises OSError / ZIP_ERRORS when unreadable)."""
        with self.open() as stream:
            return stream.read()


@dataclass(frozen=True)
class Problem:
    """An input met while walking that is not a readable file: counted as skipped with its reason."""

    origin: str
    reason: str
    missing: bool = False  # referenced by a DICOMDIR but not on the media
    unreadable: bool = False  # input that could not be read (a partial failure, unlike a dead link)


def find_sources(paths: list[str]) -> Iterator[Source | Problem]:
    """Every input under `paths`, each once, in a stable order."""
    seen_dirs: set[tuple[int, int]] = set()
    for given in paths:
        path = Path(given)
        try:
            st = path.stat()
        except OSError as exc:
            yield Problem(given, _os_reason(exc), unreadable=exc.errno != errno.ENOENT or path.is_symlink())
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(path, seen_dirs)
        elif is_dicomdir_name(path.name):
            yield from dicomdir_sources(path)
        else:
            yield from _file(path)


def _walk(root: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[Source | Problem]:
    """Recurse, following links to folders once each (a link loop ends here, not in a hang)."""
    try:
        st = root.stat()
    except OSError as exc:
        yield Problem(str(root), _os_reason(exc), unreadable=True)
        return
    key = (st.st_dev, st.st_ino)
    if key in seen_dirs:
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        yield Problem(str(root), _os_reason(exc), unreadable=True)
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
            is_file = entry.is_file(follow_symlinks=True)
        except OSError as exc:
            yield Problem(entry.path, _os_reason(exc), unreadable=True)
            continue
        if is_dir:
            yield from _walk(Path(entry.path), seen_dirs)
        elif is_file:
            yield from _file(Path(entry.path))
        elif entry.is_symlink():
            yield Problem(entry.path, "broken symbolic link")
        else:
            yield Problem(entry.path, "not a regular file")


def _file(path: Path) -> Iterator[Source | Problem]:
    """A plain file, or each member of a zip file (zips inside it included)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        yield Problem(str(path), _os_reason(exc), unreadable=True)
        return
    if magic != ZIP_MAGIC:
        yield Source(str(path), size=size)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            found = _members(archive, str(path), (), 1)
    except (OSError, *ZIP_ERRORS) as exc:
        yield Problem(str(path), f"unreadable zip file: {exc}", unreadable=True)
        return
    yield from found


def _members(
    archive: zipfile.ZipFile, path: str, chain: tuple[str, ...], depth: int
) -> list[Source | Problem]:
    """The members of an open zip (at `chain` inside the zip file `path`), nested zips read."""
    found: list[Source | Problem] = []
    for info in sorted((i for i in archive.infolist() if not i.is_dir()), key=lambda i: i.filename):
        names = (*chain, info.filename)
        if depth < MAX_ZIP_DEPTH and _is_zip(archive, info):
            try:
                with archive.open(info) as stream, zipfile.ZipFile(stream) as inner:
                    found.extend(_members(inner, path, names, depth + 1))
            except (OSError, *ZIP_ERRORS) as exc:
                found.append(
                    Problem("!".join((path, *names)), f"unreadable zip file: {exc}", unreadable=True)
                )
            continue
        found.append(Source(path, names[0], size=info.file_size, inner=names[1:]))
    return found


def _is_zip(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """Whether a member starts like a zip file (its first bytes; the rest is not read)."""
    try:
        with archive.open(info) as stream:
            return stream.read(4) == ZIP_MAGIC
    except (OSError, *ZIP_ERRORS):
        return False  # reading it as an instance reports why


def is_dicomdir_name(name: str) -> bool:
    """`DICOMDIR`, also as ISO 9660 media name it (`DICOMDIR;1`, `DICOMDIR.`), any case."""
    return _name_key(name) == "DICOMDIR"


def dicomdir_sources(dicomdir: Path) -> Iterator[Source | Problem]:
    """Exactly the files a DICOMDIR references, found case-insensitively on the media.

    Mounted CDs often change the case of names, drop or add extensions, or keep ISO 9660
    version suffixes (`IM000001;1`); all of those are matched.
    """
    try:
        ds = pydicom.dcmread(dicomdir, force=True)
        records = ds.DirectoryRecordSequence
    except Exception as exc:  # a broken DICOMDIR: say so, the user can import the folder instead
        yield Problem(str(dicomdir), f"unreadable DICOMDIR: {str(exc)[:120]}", unreadable=True)
        return
    root = dicomdir.parent
    seen: set[str] = set()
    for record in records:
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        parts = [p for part in parts for p in str(part).replace("\\", "/").split("/") if p]
        key = "/".join(parts).upper()
        if key in seen:
            continue
        seen.add(key)
        found = resolve_file_id(root, parts)
        if found is None:
            yield Problem(
                str(root.joinpath(*parts)), "referenced by the DICOMDIR but not on the media", missing=True
            )
        else:
            yield from _file(found)


def resolve_file_id(root: Path, parts: list[str]) -> Path | None:
    """Find a DICOMDIR file ID under `root`, ignoring case, extensions and `;1` suffixes."""
    current = root
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        try:
            names = os.listdir(current)
        except OSError:
            return None
        match = _match_name(names, part, last)
        if match is None:
            return None
        current = current / match
    return current if current.is_file() else None


def _match_name(names: list[str], wanted: str, allow_extension: bool) -> str | None:
    wanted_key = _name_key(wanted)
    exact = [n for n in names if n.upper() == wanted.upper()]
    if exact:
        return exact[0]
    loose = [n for n in names if _name_key(n) == wanted_key]
    if not loose and allow_extension:
        loose = [n for n in names if _name_key(n).split(".")[0] == wanted_key.split(".")[0]]
    return sorted(loose)[0] if loose else None


def _name_key(name: str) -> str:
    return name.upper().split(";")[0].rstrip(".")


def _os_reason(exc: OSError) -> str:
    if exc.errno is not None and exc.strerror:
        return f"unreadable: {exc.strerror}"
    return f"unreadable: {exc}"
