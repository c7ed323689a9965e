"""Splitting DICOM media over volumes (`--media-size 700M|4.7G|25G`) and burning-ready ISO 9660
images (`--iso FILE.iso`).

Each volume is a complete media set (`DISK001/`, `DISK002/`, ... each with its own DICOMDIR and
MANIFEST.sha256): whole studies stay on one volume when they fit, a larger study is split at
series, a larger series at instances. Sizes are decimal (700M = 700 000 000 bytes: below every
"700 MB" CD-R, as 4.7G is below a DVD's), and each file is counted in whole 2 KiB sectors with
room for its directory record. The ISO image is written by xorriso (ISO 9660 level 1, the file
IDs' own rules, with Rock Ridge and Joliet names for the manifest), beside its name first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pacsctl.errors import PacsctlError, UsageError
from pacsctl.storage import files

SECTOR = 2048
PER_FILE = 2 * SECTOR  # the file's last partial sector, its DICOMDIR record and manifest line
PER_VOLUME = 4 << 20  # DICOMDIR header, ISO 9660 system area, directories and tables
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
XORRISO = "/usr/bin/xorriso"


def parse_size(text: str) -> int:
    """`700M`, `4.7G`, `25G`, `650MB`, `1000000000`: decimal bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text.upper())
    if not match:
        raise UsageError(f"media size {text!r} is not a size", hint="e.g. --media-size 700M or 4.7G")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= PER_VOLUME + PER_FILE:
        raise UsageError(f"media size {text} is too small for DICOM media", hint="e.g. 700M for a CD-R")
    return size


def cost(record: Mapping[str, Any]) -> int:
    """What one instance takes on a volume."""
    size = int(record.get("size") or 0)
    return -(-size // SECTOR) * SECTOR + PER_FILE


def split(records: Sequence[dict[str, Any]], media_size: int) -> list[list[dict[str, Any]]]:
    """`records` (in export order) in volumes of at most `media_size` bytes each."""
    room = media_size - PER_VOLUME
    volumes: list[list[dict[str, Any]]] = [[]]
    used = 0

    def place(group: list[dict[str, Any]]) -> None:
        nonlocal used
        need = sum(cost(r) for r in group)
        if used + need > room and volumes[-1]:
            volumes.append([])
            used = 0
        volumes[-1].extend(group)
        used += need

    for study in _groups(records, "StudyInstanceUID"):
        if sum(cost(r) for r in study) <= room:
            place(study)
            continue
        for series in _groups(study, "SeriesInstanceUID"):
            if sum(cost(r) for r in series) <= room:
                place(series)
                continue
            for record in series:
                if cost(record) > room:
                    raise UsageError(
                        f"instance {record['SOPInstanceUID']} is larger than the media size",
                        hint="give a larger --media-size",
                    )
                place([record])
    return [v for v in volumes if v]


def _groups(records: Sequence[dict[str, Any]], key: str) -> list[list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(record.get(key, "")), []).append(record)
    return list(groups.values())


def volume_name(number: int) -> str:
    """`DISK001`...: a valid file ID component itself (8 characters, upper case)."""
    return f"DISK{number:03d}"


def iso_names(iso: Path, volumes: int) -> list[Path]:
    """One ISO per volume: `x.iso`, or `x-1.iso`, `x-2.iso`... for several."""
    if volumes == 1:
        return [iso]
    return [iso.with_name(f"{iso.stem}-{n}{iso.suffix or '.iso'}") for n in range(1, volumes + 1)]


def check_iso_targets(paths: list[Path]) -> None:
    """Refuse ISO names that exist (nothing is overwritten), and a missing xorriso."""
    if not os.access(XORRISO, os.X_OK):
        raise UsageError("--iso needs xorriso", hint="apt-get install xorriso")
    for path in paths:
        if path.exists():
            raise UsageError(f"{path} exists", hint="give a new name for the ISO image; nothing was written")


def write_iso(folder: Path, iso: Path, volume_id: str) -> int:
    """An ISO 9660 image of `folder` at `iso` (written beside it, then renamed); its size."""
    partial = iso.with_name(f".{iso.name}.{os.getpid()}.partial")
    command = [
        XORRISO, "-as", "mkisofs", "-iso-level", "1", "-R", "-J", "-V", volume_id[:32],
        "-quiet", "-o", str(partial), str(folder),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = " ".join(proc.stderr.split())[-300:]
        raise PacsctlError(f"xorriso could not write {iso.name}: {reason}")
    os.chmod(partial, files.FILE_MODE)
    files.make_durable([partial])
    os.rename(partial, iso)
    files.fsync_dir(iso.parent)
    return iso.stat().st_size


def remove_isos(paths: list[Path]) -> None:
    """Take back the images of an export that failed later."""
    for path in paths:
        if path.is_file():
            path.unlink()
        shutil.rmtree(path.with_name(f".{path.name}.{os.getpid()}.partial"), ignore_errors=True)
