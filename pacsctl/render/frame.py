"""One frame of a data set as a PIL image: grayscale through the standard's pipeline, colour kept.

PS3.3 C.11 (and PS3.4 N.2): stored values -> Modality LUT (rescale) -> VOI LUT or window ->
Presentation LUT (an INVERSE shape or MONOCHROME1 inverts, once, at the end). Each step is
pydicom's (`pydicom.pixels.processing`); this module picks the inputs of each step (the frame's
own functional groups in enhanced multi-frame objects) and maps the result to 8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_presentation_lut,
    apply_voi,
    apply_windowing,
    convert_color_space,
)

from pacsctl.errors import PacsctlError

# The attributes each grayscale step reads, and the functional group macros that may override
# them per frame (PS3.3 C.7.6.16: Pixel Value Transformation, Frame VOI LUT).
_PIPELINE_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PresentationLUTShape",
    "PresentationLUTSequence",
)
_FRAME_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")
_MAX_8BIT = 255.0


class RenderError(PacsctlError):
    """A frame that cannot be rendered: no pixel data, a codec that is not installed, a frame
    number out of range, pixel data that does not decode."""


@dataclass(frozen=True)
class Window:
    """A VOI window in output units of the Modality LUT (e.g. Hounsfield units for CT)."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise RenderError(f"window width must be positive, not {self.width:g}")

    @classmethod
    def parse(cls, text: str) -> Window:
        """`"C,W"` (e.g. `"40,400"`) as a window."""
        parts = text.replace(" ", "").split(",")
        try:
            center, width = (float(p) for p in parts)
        except ValueError:
            raise RenderError(f"window {text!r} is not CENTER,WIDTH", hint="e.g. --window 40,400") from None
        return cls(center, width)


def frame_count(ds: Dataset) -> int:
    """How many frames the data set's pixel data holds (0 without pixel data)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return 0
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        uid = ds.get("SOPInstanceUID", "")
        raise RenderError(f"instance {uid}: Number of Frames is not a number") from None


def render_frame(
    ds: Dataset,
    frame: int = 0,
    window: Window | None = None,
    size: int | tuple[int, int] | None = None,
) -> Image.Image:
    """Frame `frame` (0-based) of `ds` as an 8-bit image: mode L for MONOCHROME1/2, RGB for
    colour (RGB, YBR_* converted, PALETTE COLOR looked up).

    Grayscale: `window` replaces the file's VOI; without one, the file's first window, else its
    VOI LUT, else the frame's value range. `size` fits the image inside `size` x `size` (or a
    (width, height) box), keeping its aspect ratio and never enlarging it.
    """
    count = frame_count(ds)
    uid = str(ds.get("SOPInstanceUID", ""))
    if count == 0:
        raise RenderError(f"instance {uid} has no pixel data to render")
    if not 0 <= frame < count:
        raise RenderError(f"instance {uid} has {count} frame(s): there is no frame {frame + 1}")
    pixels, photometric = _decode(ds, frame, uid)
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        image = Image.fromarray(_grayscale(pixels, _frame_view(ds, frame), window), mode="L")
    else:
        image = Image.fromarray(_colour(pixels, ds, photometric), mode="RGB")
    if size is not None:
        box = (size, size) if isinstance(size, int) else size
        if min(box) < 1:
            raise RenderError(f"size {size} is not a positive number of pixels")
        image.thumbnail(box, Image.Resampling.LANCZOS)
    return image


def _decode(ds: Dataset, frame: int, uid: str) -> tuple[np.ndarray, str]:
    """The stored values of one frame, and the photometric interpretation they are in now
    (pydicom converts YBR_FULL/YBR_FULL_422 to RGB while decoding)."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is None:
        raise RenderError(f"instance {uid} has no transfer syntax (no File Meta group)")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise RenderError(f"instance {uid}: transfer syntax {syntax} has no pixel data decoder") from None
    if not decoder.is_available:
        raise RenderError(
            f"instance {uid}: no installed codec decodes transfer syntax {syntax}",
            hint="the pylibjpeg plugins (libjpeg, openjpeg, rle) decode the JPEG, JPEG 2000 and RLE syntaxes",
        )
    try:
        array, info = decoder.as_array(ds, index=frame)
    except Exception as exc:  # the codecs raise many types; the message names the pixel data problem
        reason = " ".join(str(exc).split())  # one line: pydicom lists every plugin's failure
        raise RenderError(
            f"instance {uid}: pixel data does not decode ({type(exc).__name__}: {reason})"
        ) from exc
    photometric = str(info.get("photometric_interpretation") or ds.get("PhotometricInterpretation", ""))
    return array, photometric.strip().upper()


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """The pipeline's attributes as they apply to `frame`: the top level, overridden by the shared
    and then the frame's own functional groups (enhanced multi-frame objects keep rescale and
    window there)."""
    view = Dataset()
    for keyword in _PIPELINE_KEYWORDS:
        if keyword in ds:
            setattr(view, keyword, ds[keyword].value)
    groups: list[Any] = []
    if shared := ds.get("SharedFunctionalGroupsSequence"):
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    for group in groups:
        for macro in _FRAME_MACROS:
            if items := group.get(macro):
                for elem in items[0]:
                    setattr(view, elem.keyword, elem.value)
    return view


def _grayscale(stored: np.ndarray, view: Dataset, window: Window | None) -> np.ndarray:
    values = apply_modality_lut(stored, view)
    if window is not None:
        p_values = _windowed(values, window.center, window.width, str(view.get("VOILUTFunction", "LINEAR")))
    elif "WindowCenter" in view and "WindowWidth" in view:
        center, width = _first(view.WindowCenter), _first(view.WindowWidth)
        p_values = _windowed(values, center, width, view.get("VOILUTFunction"))
    elif view.get("VOILUTSequence"):
        bits = int(view.VOILUTSequence[0].LUTDescriptor[2])
        p_values = apply_voi(values, view).astype(np.float64) * (_MAX_8BIT / (2**bits - 1))
    else:
        p_values = _value_range(values)
    if view.get("PresentationLUTSequence"):
        bits = int(view.PresentationLUTSequence[0].LUTDescriptor[2])
        p_values = apply_presentation_lut(p_values, view).astype(np.float64) * (_MAX_8BIT / (2**bits - 1))
    elif _inverted(view):
        p_values = _MAX_8BIT - p_values
    return np.clip(np.rint(p_values), 0, 255).astype(np.uint8)


def _windowed(values: np.ndarray, center: float, width: float, function: str | None) -> np.ndarray:
    """pydicom's windowing (LINEAR, LINEAR_EXACT, SIGMOID) onto 0..255: a view whose output range
    is 8 bits unsigned, so the formula's y_min/y_max are the display's."""
    view = Dataset()
    view.PhotometricInterpretation = "MONOCHROME2"
    view.BitsStored = 8
    view.PixelRepresentation = 0
    view.WindowCenter = center
    view.WindowWidth = width
    view.VOILUTFunction = (function or "LINEAR").strip().upper()
    try:
        return apply_windowing(values, view)
    except ValueError as exc:  # a width the VOI LUT Function does not allow
        raise RenderError(f"window {center:g},{width:g}: {exc}") from None


def _value_range(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return (values.astype(np.float64) - low) * (_MAX_8BIT / (high - low))


def _inverted(view: Dataset) -> bool:
    """MONOCHROME1 (minimum is white) or an INVERSE Presentation LUT Shape: one inversion, as the
    IODs that use both (DX, MG, CR) mean the same thing by them."""
    shape = str(view.get("PresentationLUTShape", "")).strip().upper()
    return view.get("PhotometricInterpretation") == "MONOCHROME1" or shape == "INVERSE"


def _first(value: Any) -> float:
    """The first of a multi-valued window attribute (alternative views: the first is the default)."""
    if isinstance(value, MultiValue | list | tuple):
        return float(value[0])
    return float(value)


def _colour(pixels: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    else:
        rgb = pixels
        if photometric.startswith("YBR"):
            rgb = convert_color_space(pixels, photometric, "RGB")
        bits = int(ds.get("BitsStored") or 8)
    if rgb.ndim == 2:  # a one-sample colour image is not valid DICOM; show its values
        rgb = np.stack([rgb] * 3, axis=-1)
    rgb = rgb[..., :3]
    if bits > 8 or rgb.dtype.itemsize > 1:
        rgb = np.rint(rgb.astype(np.float64) * (_MAX_8BIT / (2**bits - 1)))
    return np.clip(rgb, 0, 255).astype(np.uint8)
