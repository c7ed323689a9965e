"""DICOM media over several volumes (--media-size) and ISO 9660 images (--iso)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from pydicom.fileset import FileSet

from pacsctl.archive.archive import Archive
from pacsctl.errors import UsageError
from pacsctl.export.dicomdir import valid_file_id
from pacsctl.export.formats import ExportFormat
from pacsctl.export.media import PER_VOLUME, cost, parse_size, split
from pacsctl.export.run import ExportOptions, export
from pacsctl.export.target import MANIFEST_NAME
from tests.helpers import require_tool


def test_parse_size() -> None:
    assert parse_size("700M") == 700_000_000 and parse_size("4.7G") == 4_700_000_000
    assert parse_size("650MB") == 650_000_000
    with pytest.raises(UsageError):
        parse_size("big")
    with pytest.raises(UsageError, match="too small"):
        parse_size("1M")


def _record(study: str, series: str, n: int, size: int) -> dict:
    return {"StudyInstanceUID": study, "SeriesInstanceUID": series, "SOPInstanceUID": f"{series}.{n}", "size": size}


def test_split_keeps_studies_whole_when_they_fit_and_splits_larger_ones() -> None:
    mb = 1_000_000
    records = [_record("A", "A1", n, mb) for n in range(3)] + [_record("B", "B1", n, mb) for n in range(3)]
    records += [_record("C", f"C{s}", n, mb) for s in range(3) for n in range(3)]  # 9 MB: too big
    volumes = split(records, PER_VOLUME + 7 * mb)
    assert [sorted({r["StudyInstanceUID"] for r in v}) for v in volumes][:1] == [["A", "B"]]
    assert sum(len(v) for v in volumes) == len(records)
    assert all(sum(cost(r) for r in v) <= 7 * mb for v in volumes)
    home = {}
    for n, volume in enumerate(volumes):
        for record in volume:
            home.setdefault(record["SeriesInstanceUID"], set()).add(n)
    assert all(len(where) == 1 for where in home.values())  # study C split, each series whole
    with pytest.raises(UsageError, match="larger than the media size"):
        split([_record("D", "D1", 0, 50 * mb)], PER_VOLUME + 7 * mb)


@pytest.mark.interop
def test_volumes_are_complete_media_sets_and_isos_list_their_files(archive: Archive, tmp_path: Path) -> None:
    import pycdlib

    require_tool("/usr/bin/xorriso")
    dest, iso = tmp_path / "media", tmp_path / "cd.iso"
    total = sum(r["size"] for r in archive.index.instances())
    options = ExportOptions(format=ExportFormat.DICOMDIR, media_size=PER_VOLUME + total // 2, iso=iso)
    report = export(archive, dest, {}, options)
    assert report.ok and report.summary.volumes >= 2
    volumes = sorted(p for p in dest.iterdir() if p.is_dir())
    assert [v.name for v in volumes] == [f"DISK{n:03d}" for n in range(1, len(volumes) + 1)]
    seen: set[str] = set()
    for volume, image in zip(volumes, report.summary.iso, strict=True):
        fs = FileSet(volume / "DICOMDIR")
        uids = {str(i.SOPInstanceUID) for i in fs}
        assert uids and not uids & seen
        seen |= uids
        for instance in fs:
            assert Path(instance.path).is_relative_to(volume) and valid_file_id("/".join(Path(instance.FileID).parts))
        check = subprocess.run(["sha256sum", "-c", "--strict", MANIFEST_NAME], cwd=volume, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        # the ISO holds the volume: level 1 names in the ISO 9660 tree, the bytes the same
        cd = pycdlib.PyCdlib()
        cd.open(image)
        try:
            names = {f"{d}/{f}".replace("//", "/") for d, _, fs_ in cd.walk(iso_path="/") for f in fs_}
            assert "/DICOMDIR.;1" in names
            for instance in fs:
                iso_name = "/" + "/".join(Path(instance.FileID).parts) + ".;1"
                assert iso_name in names
                assert all(len(part.split(".")[0]) <= 8 for part in iso_name.strip("/").split("/"))
                out = io.BytesIO()
                cd.get_file_from_iso_fp(out, iso_path=iso_name)
                assert out.getvalue() == Path(instance.path).read_bytes()
            rr = io.BytesIO()
            cd.get_file_from_iso_fp(rr, rr_path=f"/{MANIFEST_NAME}")  # Rock Ridge keeps the long name
            assert rr.getvalue() == (volume / MANIFEST_NAME).read_bytes()
        finally:
            cd.close()
    assert seen == {r["SOPInstanceUID"] for r in archive.index.instances()}


def test_media_options_need_the_dicomdir_format(archive: Archive, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="dicomdir"):
        export(archive, tmp_path / "x", {}, ExportOptions(media_size=parse_size("700M")))
    (tmp_path / "taken.iso").write_bytes(b"")
    with pytest.raises(UsageError, match="exists"):
        export(archive, tmp_path / "y", {}, ExportOptions(format=ExportFormat.DICOMDIR, iso=tmp_path / "taken.iso"))
    assert not (tmp_path / "y").exists()
