"""WADO-RS metadata without re-reading every file per request.

The metadata of a series (every instance's header in the DICOM JSON model, bulk data as
BulkDataURI, never pixel data inline) is built from the files once and kept in
`ARCHIVE/cache/web-metadata/hh/SERIES.KEY.json`, where KEY hashes the series' instance set as
the index has it (SOP Instance UIDs and SHA-256s). A series that gains, loses or replaces an
instance (a store, a conflict replaced, a `reindex`) has another KEY, so its next request
rebuilds it; nothing has to invalidate the cache, and KEY is the ETag. The cache is derived
data: removing the folder loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pacsctl.storage import files

CACHE_DIR = Path("cache") / "web-metadata"
BULK_THRESHOLD = 1024  # binary values longer than this are referenced, not inlined
# BulkDataURIs are cached relative to the server root and made absolute per request.
BULK_PREFIX = b'"BulkDataURI":"/dicom-web/'


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
    """Per-series metadata of one archive, built on first request and kept on disk."""

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.dir = root / CACHE_DIR
        self.tmp_dir = tmp_dir

    def series_json(self, series_uid: str, instances: Sequence[Mapping[str, Any]]) -> tuple[bytes, str]:
        """A JSON array of the series' instance headers and its key; built when missing."""
        key = series_key(instances)
        folder = self.dir / hashlib.sha1(series_uid.encode()).hexdigest()[:2]
        path = folder / f"{files.safe_file_name(series_uid)}.{key}.json"
        try:
            return path.read_bytes(), key
        except FileNotFoundError:
            pass
        data = self._build(instances)
        files.ensure_dir(folder)
        for stale in folder.glob(f"{files.safe_file_name(series_uid)}.*.json"):
            stale.unlink(missing_ok=True)
        files.write_atomic(self.tmp_dir, path, data)
        return data, key

    def _build(self, instances: Sequence[Mapping[str, Any]]) -> bytes:
        ordered = sorted(
            instances, key=lambda r: (_number(r.get("InstanceNumber")), str(r["SOPInstanceUID"]))
        )
        headers = [instance_header(self.root / str(r["path"]), r) for r in ordered]
        return json.dumps(headers, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def instance_header(path: str | os.PathLike[str], record: Mapping[str, Any]) -> dict[str, Any]:
    """One instance's data set (no File Meta) in the JSON model, read up to its pixel data."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    base = (
        f"/dicom-web/studies/{record['StudyInstanceUID']}/series/{record['SeriesInstanceUID']}"
        f"/instances/{record['SOPInstanceUID']}/bulkdata/"
    )

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
