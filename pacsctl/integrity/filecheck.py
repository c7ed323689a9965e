"""Checking one stored file against its record, reading it once; walking an objects/ tree.

A full check reads the file once: the same bytes are hashed (hashlib releases the GIL on big
buffers) and their header checked, so a file is never read twice. The header check is the raw
scan the node uses (`dicom.rawheader`: a tenth of pydicom's time); what it declines (not plain,
or damaged) goes to pydicom, which then decides and words the error. Shared by `verify`
(archive and backup) and `reindex`.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pacsctl.integrity import findings as F
from pacsctl.integrity.findings import Finding
from pacsctl.storage.files import temp_owner_alive, writable

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# Files up to this size are read whole; bigger ones are hashed in chunks and only their first
# HEADER_LIMIT bytes are kept for the header (pixel data, which comes last, is not needed).
WHOLE_FILE_LIMIT = 256 << 20
HEADER_LIMIT = 64 << 20
CHUNK = 8 << 20
STALE_SECONDS = 24 * 3600  # a temp file without an owner pid this old is a leftover


@dataclass(slots=True)
class Expected:
    """What a file should be: its archive-relative path and the size and SHA-256 recorded."""

    path: str
    size: int
    sha256: str
    sop_instance_uid: str = ""
    study_uid: str = ""  # in backup manifests, so part of a backup can be restored by study
    series_uid: str = ""


@dataclass
class Content:
    """What a file is: its bytes' size and SHA-256, and the start of it for the header."""

    size: int
    sha256: str
    head: bytes


def read_head(path: Path, limit: int = 1 << 20) -> bytes:
    """The first `limit` bytes of a file (enough for the header of almost any instance)."""
    with open(path, "rb", buffering=0) as fh:
        return fh.read(limit)


def read_content(path: Path) -> Content:
    """Read a file once: size, SHA-256 and its first bytes (all of it when not huge)."""
    with open(path, "rb", buffering=0) as fh:
        size_hint = os.fstat(fh.fileno()).st_size
        if size_hint <= WHOLE_FILE_LIMIT:
            data = fh.read()  # unbuffered read(): to the end, however long the file now is
            return Content(len(data), hashlib.sha256(data).hexdigest(), data)
        digest, size, head = hashlib.sha256(), 0, bytearray()
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if len(head) < HEADER_LIMIT:
                head += chunk[: HEADER_LIMIT - len(head)]
        return Content(size, digest.hexdigest(), bytes(head))


def read_header(source: bytes | Path) -> Dataset:
    """Parse a DICOM header, up to the pixel data.

    `source` is the file's first bytes, or the file itself (big values are then skipped, not
    read). Raises ValueError with a short reason when the header cannot be parsed.
    """
    import pydicom  # imported here: `verify --quick` never needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if isinstance(source, Path):
                return pydicom.dcmread(source, stop_before_pixels=True, defer_size=1 << 20)
            return pydicom.dcmread(io.BytesIO(source), stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types on corrupt input
            raise ValueError(_first_line(exc)) from None


def load_header_scan() -> None:
    """Import the header scan (and pydicom under it) now: called before worker processes are
    forked, so they share one import instead of each paying for its own."""
    import pacsctl.dicom.rawheader  # noqa: F401


def _scanned_uid(content: Content) -> str | None:
    """The SOP Instance UID when the raw scan finds the whole file plain and readable, else None."""
    if content.size != len(content.head):
        return None  # only the start of a huge file is in memory: the scan needs all of it
    from pacsctl.dicom.rawheader import scan

    plain = scan(content.head)
    return plain.sop_instance_uid if plain is not None else None


def header_uid(source: bytes | Path) -> str:
    """The SOP Instance UID in a DICOM header (see `read_header`); ValueError if unreadable."""
    ds = read_header(source)
    uid = ds.get("SOPInstanceUID") or ds.file_meta.get("MediaStorageSOPInstanceUID")
    if not uid:
        raise ValueError("no SOP Instance UID")
    return str(uid)


def check_full(root: Path, expected: Expected, where: str = F.ARCHIVE) -> tuple[Finding | None, int]:
    """Re-hash and parse one file against its record. Returns (finding or None, bytes read)."""
    path = root / expected.path
    try:
        content = read_content(path)
    except FileNotFoundError:
        return _finding(expected, F.MISSING, "no such file", where), 0
    except OSError as exc:
        return _finding(expected, F.UNREADABLE, f"cannot read: {exc.strerror or exc}", where), 0
    if content.size != expected.size:
        detail = f"{content.size} bytes, recorded {expected.size}"
        return _finding(expected, F.WRONG_SIZE, detail, where), content.size
    if content.sha256 != expected.sha256:
        detail = f"sha256 {content.sha256[:16]}..., recorded {expected.sha256[:16]}..."
        return _finding(expected, F.HASH_MISMATCH, detail, where), content.size
    try:
        try:
            uid = _scanned_uid(content) or header_uid(content.head)
        except ValueError:
            if content.size == len(content.head):
                raise
            uid = header_uid(path)  # a header longer than the head kept in memory (rare, huge files)
    except ValueError as exc:
        return _finding(expected, F.UNREADABLE, f"DICOM header: {exc}", where), content.size
    if expected.sop_instance_uid and uid != expected.sop_instance_uid:
        return _finding(expected, F.UID_MISMATCH, f"file holds SOP Instance UID {uid}", where), content.size
    return None, content.size


def check_quick(root: Path, expected: Expected, where: str = F.ARCHIVE) -> Finding | None:
    """Presence and size only (one stat)."""
    try:
        size = os.stat(root / expected.path).st_size
    except FileNotFoundError:
        return _finding(expected, F.MISSING, "no such file", where)
    except OSError as exc:
        return _finding(expected, F.UNREADABLE, f"cannot stat: {exc.strerror or exc}", where)
    if size != expected.size:
        return _finding(expected, F.WRONG_SIZE, f"{size} bytes, recorded {expected.size}", where)
    return None


def walk_objects(root: Path, objects: str = "objects") -> Iterator[str]:
    """Every file under `root/objects`, as a root-relative POSIX path (scandir: no stat per file;
    plain strings, not Path objects: a Path per file cost more than the scan itself)."""
    prefix = len(os.path.join(root, ""))
    stack = [os.path.join(root, objects)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                yield entry.path[prefix:].replace(os.sep, "/")


def is_leftover(path: Path, now: float | None = None) -> bool:
    """Whether a file in tmp/ is a leftover of an interrupted write, never acknowledged.

    pacsctl's temp names start with the writer's pid (`files.temp_name`): a leftover when that
    process is gone. Other names (e.g. `.incoming-*`, where `serve` streams a data set being
    received) carry no owner, so only age tells: no transfer lasts STALE_SECONDS.
    """
    name = path.name.removeprefix(".incoming-")
    owner, sep, _ = name.partition("-")
    if sep and owner.isdigit():
        return not temp_owner_alive(path.with_name(name))
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_SECONDS


def clean_leftovers(tmp_dir: Path, root: Path, where: str) -> list[Finding]:
    """Remove temp files of interrupted writes (their writer is gone, nothing acknowledged them).

    On a read-only archive or backup they are reported and left (F.LEFT_READ_ONLY)."""
    out: list[Finding] = []
    if not tmp_dir.is_dir():
        return out
    remove = writable(tmp_dir)
    for path in sorted(tmp_dir.iterdir()):
        try:
            if not path.is_file() or not is_leftover(path):
                continue
            size = path.stat().st_size
            if remove:
                path.unlink()
        except FileNotFoundError:
            continue
        out.append(
            Finding(
                path.relative_to(root).as_posix(),
                F.LEFTOVER_TEMP,
                f"interrupted write, {size} bytes, never acknowledged",
                where=where,
                action=F.REMOVED if remove else F.LEFT_READ_ONLY,
            )
        )
    return out


def recorded_files(records: Iterable[dict]) -> dict[str, Expected]:
    """Index records (`Index.iter_instances()`) as expected files, by archive-relative path."""
    out: dict[str, Expected] = {}
    for rec in records:
        path = rec.get("path")
        if path:
            out[path] = Expected(
                path,
                int(rec.get("size") or 0),
                str(rec.get("sha256") or ""),
                str(rec.get("SOPInstanceUID") or ""),
                str(rec.get("StudyInstanceUID") or ""),
                str(rec.get("SeriesInstanceUID") or ""),
            )
    return out


def _finding(expected: Expected, problem: F.Problem, detail: str, where: str) -> Finding:
    return Finding(expected.path, problem, detail, expected.sop_instance_uid, where)


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
