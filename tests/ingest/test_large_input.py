"""Large input is imported with bounded memory, and `max_instance_size` refuses what is larger.

A zip member used to be read whole first: a 2 MB zip holding a 2 GiB member of zeros had no
output after 90 s, a 128 MiB member took 310 MB of memory.
"""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pydicom

from pacsctl.archive.archive import Archive
from pacsctl.config import parse_size
from tests.helpers import cli_env, run_cli

MiB = 1 << 20
# Python, pydicom and pacsctl take about 60 MB here; reading a 256 MiB member whole took 350.
PEAK_RSS_BOUND = 200 * MiB
_ZEROS = b"\0" * (4 * MiB)


def _import_with_peak_rss(archive: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """`pacsctl --archive ARCHIVE import ARGS` in a child; its peak RSS in bytes, measured by a
    parent of its own (so no other child of this test process counts)."""
    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
               "sys.exit(r.returncode)\n")
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "pacsctl", "--archive", str(archive),
                           "import", *args], env=cli_env(), capture_output=True, text=True, timeout=600)
    peak = int(proc.stderr.rsplit("PEAK", 1)[1].split()[0]) * 1024
    return proc, peak


def _large_ct_header(tmp_path: Path, ct_factory, pixel_bytes: int) -> tuple[bytes, str]:
    """The bytes of a CT up to its Pixel Data value, declaring `pixel_bytes` of pixels."""
    small = ct_factory(rows=16, cols=16)
    data = small.read_bytes()
    at = data.rfind(b"\xe0\x7f\x10\x00OW")
    assert at > 0
    return data[:at] + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_bytes), pydicom.dcmread(small).SOPInstanceUID


def _zip_streamed(path: Path, member: str, head: bytes, zeros: int) -> str:
    """A deflated zip with one member: `head` then `zeros` zero bytes (tiny on disk). Returns
    the member's SHA-256."""
    digest = hashlib.sha256(head)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open(member, "w", force_zip64=True) as fh:
        fh.write(head)
        left = zeros
        while left:
            chunk = _ZEROS[:min(left, len(_ZEROS))]
            fh.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def test_a_huge_member_of_zeros_is_skipped_by_its_first_bytes(tmp_path: Path) -> None:
    zpath = tmp_path / "bomb.zip"
    _zip_streamed(zpath, "DATA/ZEROS", b"", 768 * MiB)
    assert zpath.stat().st_size < 2 * MiB
    proc, peak = _import_with_peak_rss(tmp_path / "archive", str(zpath), "--json")
    assert proc.returncode == 0, proc.stderr
    record, summary = (json.loads(line) for line in proc.stdout.splitlines())
    assert record["status"] == "skipped" and record["reason"] == "not a DICOM file"
    assert summary["skipped"] == 1 and summary["unreadable"] == 0
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / MiB:.0f} MiB"


def test_a_large_dicom_member_is_streamed_into_place_with_bounded_memory(tmp_path: Path, ct_factory) -> None:
    pixels = 256 * MiB
    head, uid = _large_ct_header(tmp_path, ct_factory, pixels)
    zpath = tmp_path / "large.zip"
    sha = _zip_streamed(zpath, "DICOM/LARGE", head, pixels)
    archive = tmp_path / "archive"

    dry, dry_peak = _import_with_peak_rss(archive, str(zpath), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout.splitlines()[-1])["imported"] == 1
    assert not archive.exists() and dry_peak < PEAK_RSS_BOUND, f"peak RSS {dry_peak / MiB:.0f} MiB"

    proc, peak = _import_with_peak_rss(archive, str(zpath), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["imported"] == 1
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / MiB:.0f} MiB"
    stored = archive / Archive.object_relpath(uid)
    with Archive.open(archive) as opened:
        [record] = opened.index.instances()
    assert record["sha256"] == sha and record["size"] == len(head) + pixels == stored.stat().st_size
    assert list((archive / "tmp").iterdir()) == []  # the streamed temp file was linked, not left

    again, again_peak = _import_with_peak_rss(archive, str(zpath), "--json")
    assert again.returncode == 0 and json.loads(again.stdout.splitlines()[-1])["duplicates"] == 1
    assert again_peak < PEAK_RSS_BOUND


def test_input_over_max_instance_size_is_skipped_with_the_reason(tmp_path: Path, ct_factory) -> None:
    archive = tmp_path / "archive"
    assert run_cli("--archive", archive, "config", "set", "max_instance_size", "32M").returncode == 0
    head, _uid = _large_ct_header(tmp_path, ct_factory, 40 * MiB)
    zpath = tmp_path / "in" / "large.zip"
    zpath.parent.mkdir()
    _zip_streamed(zpath, "DICOM/LARGE", head, 40 * MiB)
    plain = tmp_path / "in" / "large.dcm"
    with open(plain, "wb") as fh:
        fh.write(head)
        fh.truncate(len(head) + 40 * MiB)  # sparse
    ct_factory("small.dcm", directory=tmp_path / "in")
    out = run_cli("--archive", archive, "import", zpath.parent, "--json")
    assert out.returncode == 3, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    refused = {r["path"]: r["reason"] for r in lines[:-1]}
    assert set(refused) == {f"{zpath}!DICOM/LARGE", str(plain)}
    assert all(reason.startswith("larger than max_instance_size (32 MiB): 40.") for reason in refused.values())
    assert (lines[-1]["imported"], lines[-1]["unreadable"]) == (1, 2)
    assert not list((archive / "tmp").iterdir())
    bad = run_cli("--archive", archive, "config", "set", "max_instance_size", "lots")
    assert bad.returncode == 2 and "invalid size" in bad.stderr


def test_sizes_parse_in_binary_units() -> None:
    assert parse_size("1048576") == MiB
    assert parse_size("512M") == parse_size("512MiB") == 512 * MiB
    assert parse_size("2G") == parse_size("2 gb") == 2 << 30
