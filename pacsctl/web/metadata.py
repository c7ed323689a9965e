"""WADO-RS metadata without re-reading every file per request.

The metadata of a series (every instance's header in the DICOM JSON model, bulk data as
BulkDataURI, never pixel data inline) is built from the files once and kept in
`ARCHIVE/cache/web-metadata/hh/SERIES.KEY.json`, where KEY hashes the series' instance set as
the index has it (SOP Instance UIDs and SHA-256s). A series that gains, loses or replaces an
instance (a store, a conflict replaced, a `reindex`) has another KEY, so its next request
rebuilds it; nothing has to invalidate the cache, and KEY is the ETag. The cache is derived
data: removing the folder loses nothing, so it is written atomically but not fsynced; instead
each file starts with a line holding its body's length and SHA-256, and a file that does not
match (torn by a crash, truncated, damaged) is rebuilt, never served.

The caches are filled before anyone asks: `warm` (the web process at start, in a background
thread, and after each STOW for the series it touched) and `rebuild` (`pacsctl reindex`, which
also removes the files of series that changed or are gone, so disk use stays bounded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pacsctl.dicom.rawheader import PLAIN_SYNTAXES
from pacsctl.storage import files
from pacsctl.web import fastjson

if TYPE_CHECKING:
    from pacsctl.archive.archive import Archive

CACHE_DIR = Path("cache") / "web-metadata"
BULK_THRESHOLD = 1024  # binary values longer than this are referenced, not inlined
# BulkDataURIs are cached relative to the server root and made absolute per request.
BULK_PREFIX = b'"BulkDataURI":"/dicom-web/'
# explicit VR little endian, native or encapsulated (the walk stops before the pixel data)
_FAST_SYNTAXES = PLAIN_SYNTAXES - {"1.2.840.10008.1.2"}
MAGIC = b"pacsctl-web-metadata 1 "  # then the body's length and SHA-256, a newline, the body


def series_key(instances: Sequence[Mapping[str, Any]]) -> str:
    """The cache key (and ETag) of a series: a hash of its instances' UIDs and contents."""
    digest = hashlib.sha256()
    for uid, sha in sorted((str(r.get("SOPInstanceUID", "")), str(r.get("sha256", ""))) for r in instances):
        digest.update(f"{uid} {sha}\n".encode())
    return digest.hexdigest()[:24]


def combined_key(keys: Sequence[str]) -> str:
    """The ETag of several series' metadata (a study's)."""
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]


class MetadataCache:
    """Per-series metadata of one archive, kept on disk (built by `warm`, else on request)."""

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.dir = root / CACHE_DIR
        self.tmp_dir = tmp_dir

    def path(self, series_uid: str, key: str) -> Path:
        """Where the metadata of this version of the series is kept."""
        folder = self.dir / hashlib.sha1(series_uid.encode()).hexdigest()[:2]
        return folder / f"{files.safe_file_name(series_uid)}.{key}.json"

    def cached(self, series_uid: str, instances: Sequence[Mapping[str, Any]]) -> bytes | None:
        """The cached JSON of the series as the index has it now, if a sound file holds it."""
        return read_checked(self.path(series_uid, series_key(instances)))

    def series_json(self, series_uid: str, instances: Sequence[Mapping[str, Any]]) -> tuple[bytes, str]:
        """A JSON array of the series' instance headers and its key; built when missing."""
        key = series_key(instances)
        path = self.path(series_uid, key)
        data = read_checked(path)
        if data is None:
            data = self._build(instances)
            self._store(series_uid, path, data)
        return data, key

    def _store(self, series_uid: str, path: Path, data: bytes) -> None:
        files.ensure_dir(path.parent, durable=False)
        header = MAGIC + f"{len(data)} {hashlib.sha256(data).hexdigest()}\n".encode()
        # not fsynced: derived data, checked on every read (see the module's docstring)
        files.publish(
            files.stage(self.tmp_dir, [header, data], fsync=False, digest=False), path, replace=True
        )
        for stale in path.parent.glob(f"{files.safe_file_name(series_uid)}.*.json"):
            if stale != path:  # an older version of the series: never asked for again
                stale.unlink(missing_ok=True)

    def _build(self, instances: Sequence[Mapping[str, Any]]) -> bytes:
        ordered = sorted(
            instances, key=lambda r: (_number(r.get("InstanceNumber")), str(r["SOPInstanceUID"]))
        )
        headers = [instance_header(self.root / str(r["path"]), r) for r in ordered]
        return json.dumps(headers, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def cache_files(self) -> Iterator[Path]:
        """Every file in the cache (for pruning)."""
        if self.dir.is_dir():
            yield from self.dir.glob("*/*.json")


def read_checked(path: Path) -> bytes | None:
    """The body of a cache file when its header line matches it; None when missing or unsound."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    end = raw.find(b"\n", 0, 128)
    if not raw.startswith(MAGIC) or end < 0:
        return None
    try:
        length_text, digest = raw[len(MAGIC) : end].decode("ascii").split(" ")
        length = int(length_text)
    except ValueError:
        return None
    body = raw[end + 1 :]
    if len(body) != length or hashlib.sha256(body).hexdigest() != digest:
        return None
    return body


@dataclass
class WarmResult:
    """What a warming pass did."""

    series: int = 0  # series looked at
    built: int = 0  # of them, built now (the others had a sound cache)
    failed: int = 0  # could not be built (a file unreadable): built on request, or reported there
    removed: int = 0  # stale cache files removed


def _no_lock() -> AbstractContextManager[None]:
    return contextlib.nullcontext()


def warm(
    archive: Archive,
    cache: MetadataCache,
    series_uids: Sequence[str] | None = None,
    lock: Callable[[], AbstractContextManager[Any]] = _no_lock,
    should_stop: Callable[[], bool] = lambda: False,
    prune: bool = False,
) -> WarmResult:
    """Build the cache of every series (or of `series_uids`) that lacks a sound one.

    The index is read under `lock()` (the web process's), the files outside it, so requests
    are never held up for longer than one index read. With `prune`, cache files of series that
    changed or are gone are removed too.
    """
    result = WarmResult()
    with lock():
        listed = archive.index.series(series_uids=list(series_uids) if series_uids is not None else None)
    wanted = {str(r["SeriesInstanceUID"]): str(r["StudyInstanceUID"]) for r in listed}
    keep: set[Path] = set()
    for series_uid, study_uid in wanted.items():
        if should_stop():
            return result
        with lock():
            instances = archive.index.instances(study_uids=[study_uid], series_uids=[series_uid])
        if not instances:
            continue
        result.series += 1
        keep.add(cache.path(series_uid, series_key(instances)))
        if cache.cached(series_uid, instances) is not None:
            continue
        try:
            cache.series_json(series_uid, instances)
            result.built += 1
        except Exception:  # noqa: BLE001 - a damaged file: the request path reports it
            result.failed += 1
    if prune and series_uids is None:
        for path in cache.cache_files():
            if path not in keep:
                path.unlink(missing_ok=True)
                result.removed += 1
    return result


def rebuild(archive: Archive) -> WarmResult:
    """Every series' metadata cache as the index has it now, stale files removed (`reindex`)."""
    return warm(archive, MetadataCache(archive.root, archive.tmp_dir), prune=True)


class Warmer:
    """A background thread of the web process that warms caches: all series at start, then the
    series each STOW touched. Low priority; a request never waits for it (one for a series
    being warmed builds it itself, and the atomic replace keeps either result)."""

    def __init__(self, archive: Archive, cache: MetadataCache, lock: threading.Lock) -> None:
        self.archive = archive
        self.cache = cache
        self.lock = lock
        self._pending: list[str] | None = None  # None: everything (the start)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._guard = threading.Lock()  # _pending
        self._wake.set()
        self._thread = threading.Thread(target=self._run, name="pacsctl-web-warm", daemon=True)

    def start(self) -> Warmer:
        self._thread.start()
        return self

    def touched(self, series_uids: Sequence[str]) -> None:
        """Warm these series soon (after a STOW)."""
        with self._guard:
            if self._pending is not None:
                self._pending.extend(series_uids)
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # lower this thread only (Linux)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._guard:
                pending, self._pending = self._pending, []
            try:
                warm(
                    self.archive,
                    self.cache,
                    sorted(set(pending)) if pending is not None else None,
                    lock=lambda: self.lock,
                    should_stop=self._stop.is_set,
                    prune=pending is None,
                )
            except Exception:  # noqa: BLE001 - derived data: requests build what is missing
                pass


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def instance_header(path: str | os.PathLike[str], record: Mapping[str, Any]) -> dict[str, Any]:
    """One instance's data set (no File Meta) in the JSON model, read up to its pixel data."""
    base = (
        f"/dicom-web/studies/{record['StudyInstanceUID']}/series/{record['SeriesInstanceUID']}"
        f"/instances/{record['SOPInstanceUID']}/bulkdata/"
    )
    fast = _fast_header(path, base)
    if fast is not None:
        return fast
    return pydicom_header(path, base)


def _fast_header(path: str | os.PathLike[str], base: str) -> dict[str, Any] | None:
    """The plain case without pydicom (see `fastjson`); None: take pydicom's path."""
    with open(path, "rb") as fh:
        try:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # only the header is paged in
        except ValueError:  # an empty file
            return None
    with data:
        syntax, start = _meta_syntax(data)
        if syntax not in _FAST_SYNTAXES:
            return None
        found = fastjson.json_header(data, start, BULK_THRESHOLD, lambda tag: f"{base}{tag:08X}")
    if found is None:
        return None
    out, _pixels = found
    if "00280010" in out:  # Rows: pixel data follows where the walk stopped (as pydicom's path)
        bits = (out.get("00280100", {}).get("Value") or [16])[0] or 16
        vr = "OB" if syntax != fastjson.EXPLICIT_LE_UID or bits <= 8 else "OW"
        out["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base}7FE00010"}
    return out


def _meta_syntax(data: mmap.mmap) -> tuple[str, int]:
    """The Transfer Syntax UID of a Part-10 file and where its data set starts ("" if not one)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return "", 0
    pos, syntax = 132, ""
    while pos + 8 <= len(data):
        group, element, vr, length = struct.unpack_from("<HH2sH", data, pos)
        if group != 0x0002:
            break
        if vr in (b"OB", b"UN", b"SQ", b"UT", b"UC", b"UR", b"OW"):
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12
        else:
            pos += 8
        if element == 0x0010:
            syntax = bytes(data[pos : pos + length]).decode("ascii", "replace").rstrip("\x00 ")
        pos += length
    return syntax, pos


def pydicom_header(path: str | os.PathLike[str], base: str) -> dict[str, Any]:
    """One instance's header as pydicom reads it (every case the fast path leaves)."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)

    def bulk(elem: Any) -> str:
        return f"{base}{int(elem.tag):08X}"

    out: dict[str, Any] = ds.to_json_dict(BULK_THRESHOLD, bulk)
    if "Rows" in ds:  # pixel data follows where the read stopped
        ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
        compressed = ts not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
        bits = int(ds.get("BitsAllocated", 16) or 16)
        vr = "OB" if compressed or bits <= 8 else "OW"
        out["7FE00010"] = {"vr": vr, "BulkDataURI": f"{base}7FE00010"}
    return out


def join_arrays(arrays: Sequence[bytes]) -> bytes:
    """Several JSON arrays as one, without parsing them."""
    inner = [a.strip()[1:-1] for a in arrays]
    return b"[" + b",".join(part for part in inner if part.strip()) + b"]"


def absolute_bulk_uris(data: bytes, origin: str) -> bytes:
    """The cached root-relative BulkDataURIs with this server's origin (`http://host:port`)."""
    return data.replace(BULK_PREFIX, b'"BulkDataURI":"' + origin.encode() + b"/dicom-web/")
