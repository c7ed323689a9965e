"""WADO-RS rendered resources and pixel data (PS3.18 10.4.1.1.3-5): `/rendered` and
`/thumbnail` (PNG or JPEG through `pacsctl.render`, the renderer of `export --format png`),
`/frames/{n}` (uncompressed frames as application/octet-stream, compressed ones as their own
media types) and `/bulkdata/{tag}`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsctl.render import ImageFormat, RenderError, Window, encode, frame_count, render_frame
from pacsctl.web.errors import WebError
from pacsctl.web.wado import MediaRange, Part

THUMBNAIL_SIZE = 128
DEFAULT_QUALITY = 90
# media types of compressed frames by transfer syntax (PS3.18 Table 8.7.3-2)
_FRAME_TYPES: Mapping[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_UNCOMPRESSED = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


@dataclass(frozen=True)
class RenderRequest:
    """The parameters of a rendered request: image format, window, viewport, quality."""

    fmt: ImageFormat
    window: Window | None = None
    size: tuple[int, int] | None = None
    quality: int = DEFAULT_QUALITY

    @classmethod
    def parse(cls, accept: Sequence[MediaRange], params: Mapping[str, str], thumbnail: bool) -> RenderRequest:
        """From the Accept header and the query (`window=C,W[,FUNCTION]`, `viewport=W,H`,
        `quality`); 400 for a bad value, 406 when neither PNG nor JPEG is acceptable."""
        fmt = _format(accept)
        window = None
        if params.get("window"):
            try:
                window = Window.parse(",".join(params["window"].split(",")[:2]))
            except RenderError as exc:
                raise WebError(400, str(exc), hint="window=CENTER,WIDTH, e.g. window=40,400") from None
        size: tuple[int, int] | None = (THUMBNAIL_SIZE, THUMBNAIL_SIZE) if thumbnail else None
        if params.get("viewport"):
            fields = params["viewport"].split(",")
            try:
                width, height = int(fields[0]), int(fields[1] if len(fields) > 1 else fields[0])
            except ValueError:
                width = height = 0
            if not (0 < width <= 8192 and 0 < height <= 8192):
                raise WebError(400, "viewport must be WIDTH,HEIGHT in pixels (1-8192)")
            size = (width, height)
        quality = DEFAULT_QUALITY
        if params.get("quality"):
            if not params["quality"].isdigit() or not 1 <= int(params["quality"]) <= 100:
                raise WebError(400, "quality must be 1-100")
            quality = int(params["quality"])
        return cls(fmt, window, size, quality)


def _format(accept: Sequence[MediaRange]) -> ImageFormat:
    for r in accept:
        if r.media_type in ("image/jpeg", "image/*", "*/*"):
            return ImageFormat.JPEG  # PS3.18's default for rendered media
        if r.media_type == "image/png":
            return ImageFormat.PNG
    raise WebError(406, "rendered images are image/jpeg or image/png", hint="Accept: image/png")


def render(path: Path, frame: int, request: RenderRequest) -> bytes:
    """Frame `frame` (1-based) of the instance at `path`, rendered and encoded."""
    import pydicom

    ds = pydicom.dcmread(path)
    try:
        image = render_frame(ds, frame - 1, request.window, request.size)
    except RenderError as exc:
        status = 404 if "there is no frame" in str(exc) else 400
        raise WebError(status, str(exc)) from None
    return encode(image, request.fmt, request.quality)


def middle(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The instance a series' or study's thumbnail shows: the middle one of the first series."""
    first_series = records[0].get("SeriesInstanceUID")
    series = [r for r in records if r.get("SeriesInstanceUID") == first_series]
    return series[len(series) // 2]


def parse_frame_list(text: str) -> list[int]:
    """`1`, `1,3,5` -> 1-based frame numbers; 400 otherwise."""
    try:
        numbers = [int(item) for item in text.split(",")]
    except ValueError:
        numbers = []
    if not numbers or any(n < 1 for n in numbers) or len(numbers) > 10_000:
        raise WebError(400, "frames are 1-based numbers separated by commas, e.g. frames/1,2")
    return numbers


def frame_parts(path: Path, numbers: Sequence[int], accept: Sequence[MediaRange]) -> list[Part]:
    """The frames of an instance as multipart parts: uncompressed bytes as stored
    (application/octet-stream), compressed ones as stored when their media type is acceptable,
    else decoded to uncompressed bytes."""
    import pydicom
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(path)
    count = frame_count(ds)
    if count == 0 or "PixelData" not in ds:
        raise WebError(404, "this instance has no pixel data")
    if any(n > count for n in numbers):
        raise WebError(404, f"the instance has {count} frame(s)")
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    wanted = {r.part_type for r in accept} | {r.media_type for r in accept}
    if syntax in _UNCOMPRESSED:
        if not wanted & {"application/octet-stream", "*/*", "application/*"}:
            raise WebError(406, "uncompressed frames are application/octet-stream")
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        data = ds.PixelData
        return [
            Part("application/octet-stream", data=bytes(data[(n - 1) * size : n * size])) for n in numbers
        ]
    media = _FRAME_TYPES.get(syntax, "application/octet-stream")
    if wanted & {media, "*/*", "image/*"} or (media != "application/octet-stream" and media in wanted):
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [Part(f"{media}; transfer-syntax={syntax}", data=frames[n - 1]) for n in numbers]
    if wanted & {"application/octet-stream", "application/*"}:
        from pydicom.pixels import pixel_array

        try:
            return [
                Part("application/octet-stream", data=pixel_array(path, index=n - 1, raw=True).tobytes())
                for n in numbers
            ]
        except Exception as exc:  # noqa: BLE001 - no codec installed for this syntax
            raise WebError(406, f"cannot decode frames stored as {syntax} ({type(exc).__name__})") from None
    raise WebError(406, f"frames stored as {syntax} are {media} or application/octet-stream")


def bulk_value(path: Path, tag: int) -> bytes:
    """The bytes of a top-level binary attribute (pixel data: every frame, as stored)."""
    import pydicom

    ds = pydicom.dcmread(path)
    if tag not in ds:
        raise WebError(404, f"the instance has no attribute {tag:08X}")
    value = ds[tag].value
    if not isinstance(value, (bytes, bytearray)):
        raise WebError(404, f"attribute {tag:08X} is not bulk data")
    return bytes(value)
