"""export's converting formats: png/jpeg renders, --transcode (pixel values identical),
--anonymize (names and contents de-identified, the same key the same result)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread

from pacsctl.archive.archive import Archive
from pacsctl.export.formats import ExportFormat, Syntax
from pacsctl.export.images import SHEET_NAME
from pacsctl.export.run import ExportOptions, export
from pacsctl.export.transcode import transcode
from pacsctl.render import Window, render_frame
from tests.helpers import TESTDATA_DIR, invoke_cli


def test_png_export_renders_every_image_and_skips_the_rest(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "png"
    report = export(archive, dest, {}, ExportOptions(format=ExportFormat.PNG, size=32, sheet=True))
    assert report.ok and report.summary.skipped == 1  # the RT plan has no pixel data
    pngs = [p for p in dest.rglob("*.png") if p.name != SHEET_NAME]
    assert len(pngs) == 10 and all(max(Image.open(p).size) <= 32 for p in pngs)
    sheets = list(dest.rglob(SHEET_NAME))
    assert len(sheets) == 6  # one per series folder holding an image
    # a render is the library's render of the archived file, losslessly encoded
    record = next(r for r in archive.index.instances() if r.get("PatientID") == "P2")
    expected = np.asarray(render_frame(dcmread(archive.path_of(record["path"])), size=32))
    assert any(np.array_equal(np.asarray(Image.open(p)), expected) for p in pngs)


def test_jpeg_with_a_window_and_every_frame(archive_dir: Path, tmp_path: Path) -> None:
    from tests.integrity.test_verify import make_archive

    with make_archive(archive_dir, [TESTDATA_DIR / "SC_rgb_rle_2frame.dcm", TESTDATA_DIR / "CT_small.dcm"]) as arch:
        dest = tmp_path / "jpeg"
        export(arch, dest, {}, ExportOptions(format=ExportFormat.JPEG, all_frames=True, window=Window(40, 400)))
    names = sorted(p.name for p in dest.rglob("*.jpg"))
    assert len(names) == 3 and sum("_f000" in n for n in names) == 2
    assert all(Image.open(p).format == "JPEG" for p in dest.rglob("*.jpg"))


def test_render_options_need_an_image_format(archive: Archive, tmp_path: Path) -> None:
    result = invoke_cli("--archive", str(archive.root), "export", str(tmp_path / "x"), "--all", "--size", "64")
    assert result.returncode == 2 and "png or jpeg" in result.stderr


COMPRESSED = [
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless, colour
    "JPEG2000.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPGExtended.dcm",  # lossy source: decompressed values kept as decoded
]


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_files_transcode_to_explicit_le_with_identical_pixel_values(name: str) -> None:
    data = (TESTDATA_DIR / name).read_bytes()
    out = dcmread(io.BytesIO(transcode(data, Syntax.EXPLICIT_LE)))
    original = dcmread(TESTDATA_DIR / name)
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(out.pixel_array, original.pixel_array)
    assert out.SOPInstanceUID == original.SOPInstanceUID and out.PatientName == original.PatientName


@pytest.mark.parametrize("syntax", [Syntax.RLE, Syntax.JPEG2000_LOSSLESS, Syntax.JPEG_LS_LOSSLESS])
def test_lossless_compression_round_trips(syntax: Syntax) -> None:
    original = dcmread(TESTDATA_DIR / "MR_small.dcm")
    out = dcmread(io.BytesIO(transcode((TESTDATA_DIR / "MR_small.dcm").read_bytes(), syntax)))
    assert out.file_meta.TransferSyntaxUID == syntax.uid
    assert np.array_equal(out.pixel_array, original.pixel_array)


def test_export_transcode_explicit_le(archive: Archive, tmp_path: Path) -> None:
    dest = tmp_path / "plain"
    report = export(archive, dest, {}, ExportOptions(transcode="explicit-le"))
    assert report.ok and report.summary.exported == 11
    for path in dest.rglob("*.dcm"):
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    # the media flavour records the syntax of the exported files
    media = tmp_path / "media"
    export(archive, media, {}, ExportOptions(format=ExportFormat.DICOMDIR, transcode="explicit-le"))
    records = dcmread(media / "DICOMDIR").DirectoryRecordSequence
    syntaxes = {r.ReferencedTransferSyntaxUIDInFile for r in records if "ReferencedTransferSyntaxUIDInFile" in r}
    assert syntaxes == {"1.2.840.10008.1.2.1"}


def test_anonymized_export_names_and_contents_hold_no_patient_value(archive: Archive, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("a long secret for the test\n")
    runs = []
    for name in ("a", "b"):
        dest = tmp_path / name
        result = invoke_cli(
            "--archive", str(archive.root), "export", str(dest), "--patient", "P1",
            "--anonymize", "--key-file", str(key), "--json",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        runs.append(sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.dcm")))
        originals = {r["SOPInstanceUID"] for r in archive.index.instances() if r.get("PatientID") == "P1"}
        for path in dest.rglob("*.dcm"):
            ds = dcmread(path)
            assert ds.PatientID != "P1" and "P1" not in path.relative_to(dest).as_posix()
            assert ds.SOPInstanceUID not in originals and ds.PatientIdentityRemoved == "YES"
    assert runs[0] == runs[1] and len(runs[0]) == 4  # the same key: the same names
    # --key gives the secret (as `pacsctl anonymize` takes it); -k still selects
    result = invoke_cli(
        "--archive", str(archive.root), "export", str(tmp_path / "c"), "-k", "PatientID=P1",
        "--anonymize", "--key", "a long secret for the test",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(tmp_path / "c").as_posix() for p in (tmp_path / "c").rglob("*.dcm")) == runs[0]


def test_anonymize_needs_a_key(archive: Archive, tmp_path: Path) -> None:
    result = invoke_cli("--archive", str(archive.root), "export", str(tmp_path / "x"), "--all", "--anonymize")
    assert result.returncode == 2 and "--key" in result.stderr
