"""render: one frame through the grayscale pipeline (or colour kept), compared with DCMTK's
dcmj2pnm on the same files and windows; codecs DCMTK 3.6.7 lacks (JPEG 2000, JPEG-LS) compared
with the same image stored uncompressed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset

from pacsctl.render import ImageFormat, RenderError, Window, encode, frame_count, render_frame
from tests.helpers import TESTDATA_DIR, run_dcmtk


def _testfile(name: str) -> Dataset:
    return dcmread(TESTDATA_DIR / name)


def _dcmj2pnm(path: Path, out: Path, *options: str) -> np.ndarray:
    run_dcmtk("dcmj2pnm", "+on", *options, str(path), str(out))
    return np.asarray(Image.open(out)).astype(np.float64)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _assert_like_dcmtk(mine: Image.Image, reference: np.ndarray) -> None:
    pixels = np.asarray(mine).astype(np.float64)
    assert pixels.shape == reference.shape
    assert _correlation(pixels, reference) > 0.999
    assert np.abs(pixels - reference).mean() < 1.5  # rounding, not a different mapping


def _monochrome1(tmp_path: Path) -> Path:
    """CT_small as MONOCHROME1 (minimum white), with a window of its own."""
    ds = _testfile("CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 1100, 400
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    return path


CASES = [
    # (file, dcmj2pnm options, our window): the file's window, a given one, the value range
    ("MR_small.dcm", ["+Wi", "1"], None),
    ("MR_small.dcm", ["+Ww", "600", "1200"], Window(600, 1200)),
    ("CT_small.dcm", ["+Ww", "100", "300"], Window(100, 300)),
    ("CT_small.dcm", ["+Wm"], None),
    ("MR_small_RLE.dcm", ["+Wi", "1"], None),
    ("JPGExtended.dcm", ["+Wm"], None),  # 12-bit JPEG
    ("rtdose.dcm", ["+Wm"], None),  # 32-bit, rescaled
    ("examples_rgb_color.dcm", [], None),
    ("examples_ybr_color.dcm", [], None),  # JPEG baseline YBR_FULL_422
    ("SC_ybr_full_422_uncompressed.dcm", [], None),
    ("SC_rgb_rle_16bit.dcm", [], None),  # 16 bits per sample
    ("examples_palette.dcm", [], None),
    ("SC_rgb_jpeg_dcmtk.dcm", [], None),
]


@pytest.mark.interop
@pytest.mark.parametrize(("name", "options", "window"), CASES, ids=[f"{c[0]}{''.join(c[1])}" for c in CASES])
def test_render_matches_dcmj2pnm(
    tmp_path: Path, name: str, options: list[str], window: Window | None
) -> None:
    reference = _dcmj2pnm(TESTDATA_DIR / name, tmp_path / "ref.png", *options)
    _assert_like_dcmtk(render_frame(_testfile(name), window=window), reference)


@pytest.mark.interop
def test_monochrome1_is_inverted_after_the_window_like_dcmj2pnm(tmp_path: Path) -> None:
    path = _monochrome1(tmp_path)
    mine = render_frame(dcmread(path))
    _assert_like_dcmtk(mine, _dcmj2pnm(path, tmp_path / "ref.png", "+Wi", "1"))
    # and it is the MONOCHROME2 rendering inverted, not the window applied to inverted values
    ds2 = dcmread(path)
    ds2.PhotometricInterpretation = "MONOCHROME2"
    mono2 = np.asarray(render_frame(ds2)).astype(int)
    assert np.array_equal(np.asarray(mine).astype(int), 255 - mono2)


@pytest.mark.interop
def test_frame_choice_matches_dcmj2pnm(tmp_path: Path) -> None:
    name = "SC_rgb_rle_2frame.dcm"
    ds = _testfile(name)
    assert frame_count(ds) == 2
    reference = _dcmj2pnm(TESTDATA_DIR / name, tmp_path / "ref.png", "+F", "2")
    _assert_like_dcmtk(render_frame(ds, frame=1), reference)
    assert not np.array_equal(np.asarray(render_frame(ds, frame=0)), np.asarray(render_frame(ds, frame=1)))


@pytest.mark.parametrize(
    ("compressed", "plain"),
    [
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_bigendian.dcm", "MR_small.dcm"),
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm"),  # JPEG lossless, colour
        ("SC_rgb_gdcm_KY.dcm", "SC_rgb_rle.dcm"),  # JPEG 2000 lossless, colour
    ],
)
def test_lossless_syntaxes_render_like_the_uncompressed_image(compressed: str, plain: str) -> None:
    expected = np.asarray(render_frame(_testfile(plain)))
    assert np.array_equal(np.asarray(render_frame(_testfile(compressed))), expected)


def test_every_readable_image_test_file_renders_or_says_why(dicom_test_files: list[Path]) -> None:
    rendered = 0
    for path in dicom_test_files:
        ds = dcmread(path)
        try:
            if frame_count(ds) == 0:
                continue
            image = render_frame(ds, size=64)
        except RenderError as exc:
            assert "\n" not in str(exc)
            continue
        assert image.mode in ("L", "RGB") and max(image.size) <= 64
        rendered += 1
    assert rendered >= 30


def test_16_bit_values_use_the_whole_8_bit_range() -> None:
    image = np.asarray(render_frame(_testfile("CT_small.dcm")))  # no window: the value range
    assert image.min() == 0 and image.max() == 255


def test_size_fits_the_box_and_keeps_the_aspect_ratio() -> None:
    ds = _testfile("JPEG2000.dcm")  # 256 x 1024
    assert render_frame(ds).size == (256, 1024)
    assert render_frame(ds, size=128).size == (32, 128)
    assert render_frame(ds, size=(500, 500)).size == (125, 500)
    assert render_frame(ds, size=4096).size == (256, 1024)  # never enlarged


def test_encode_png_is_lossless_and_jpeg_decodes() -> None:
    image = render_frame(_testfile("examples_rgb_color.dcm"))
    png = encode(image, ImageFormat.PNG)
    assert png.startswith(b"\x89PNG")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(image))
    jpeg = encode(image, "jpeg", quality=80)
    assert jpeg.startswith(b"\xff\xd8") and Image.open(io.BytesIO(jpeg)).size == image.size


def test_errors_name_the_problem() -> None:
    with pytest.raises(RenderError, match="no pixel data"):
        render_frame(_testfile("rtplan.dcm"))
    with pytest.raises(RenderError, match="there is no frame 3"):
        render_frame(_testfile("SC_rgb_rle_2frame.dcm"), frame=2)
    with pytest.raises(RenderError, match="CENTER,WIDTH"):
        Window.parse("40")
    with pytest.raises(RenderError, match="positive"):
        Window(40, 0)
    assert Window.parse("40, 400") == Window(40, 400)


def test_enhanced_objects_take_rescale_and_window_from_the_functional_groups() -> None:
    """Enhanced multi-frame objects keep Modality LUT and VOI per frame (PS3.3 C.7.6.16): the
    frame's own groups, then the shared ones, override the top level."""
    plain = _testfile("CT_small.dcm")
    plain.RescaleSlope, plain.RescaleIntercept = 1, -1024
    plain.WindowCenter, plain.WindowWidth = 40, 400
    expected = np.asarray(render_frame(plain))

    enhanced = _testfile("CT_small.dcm")
    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if keyword in enhanced:
            delattr(enhanced, keyword)
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1, -1024, "HU"
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 40, 400
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transform]
    frame = Dataset()
    frame.FrameVOILUTSequence = [voi]
    enhanced.SharedFunctionalGroupsSequence = [shared]
    enhanced.PerFrameFunctionalGroupsSequence = [frame]
    assert np.array_equal(np.asarray(render_frame(enhanced)), expected)
    assert not np.array_equal(np.asarray(render_frame(_testfile("CT_small.dcm"))), expected)
