"""`export --format png|jpeg`: rendered images for people who would rather look than read.

Each image instance becomes one file per frame rendered (`render.render_frame`: Modality LUT,
VOI LUT or window, Presentation LUT / MONOCHROME1 in the standard's order; colour kept), named
by the layout with the image's extension (`_f0001`... before it with `--frames all`);
instances without pixel data are skipped. `--sheet` adds one contact sheet per series folder
(`sheet.png`: a thumbnail of each instance's first frame, in export order).
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from PIL import Image
from pydicom import dcmread

from pacsctl.export.native import with_suffix
from pacsctl.export.run import ConvertError
from pacsctl.render import ImageFormat, RenderError, Window, encode, frame_count, render_frame

SHEET_NAME = "sheet.png"
SHEET_TILE = 128  # pixels per thumbnail
SHEET_COLUMNS = 8


class Renders:
    """The converter of the png and jpeg formats."""

    names_files = False

    def __init__(
        self,
        fmt: ImageFormat,
        window: Window | None = None,
        size: int | None = None,
        all_frames: bool = False,
        sheet: bool = False,
        quality: int = 90,
    ) -> None:
        self.fmt, self.window, self.size, self.all_frames, self.quality = (
            fmt,
            window,
            size,
            all_frames,
            quality,
        )
        self._sheets: dict[str, list[tuple[int, Image.Image]]] | None = {} if sheet else None
        self._lock = threading.Lock()
        self._order = 0

    def applies(self, record: Mapping[str, Any]) -> bool:
        """Every instance is rendered (or skipped when it holds no pixel data)."""
        return True

    def convert(self, data: bytes, record: Mapping[str, Any], relpath: str) -> list[tuple[str, bytes]]:
        """The frames as image files; [] without pixel data."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = dcmread(io.BytesIO(data))
                count = frame_count(ds)
                if count == 0:
                    return []
                frames = range(count) if self.all_frames else range(1)
                out = []
                for frame in frames:
                    image = render_frame(ds, frame, self.window, self.size)
                    mark = f"_f{frame + 1:04d}" if self.all_frames and count > 1 else ""
                    out.append(
                        (with_suffix(relpath, mark + self.fmt.suffix), encode(image, self.fmt, self.quality))
                    )
                    if frame == 0 and self._sheets is not None:
                        self._add_to_sheet(relpath, image, record)
            except RenderError as exc:
                raise ConvertError(str(exc)) from None
            except Exception as exc:  # pydicom raises many types for a damaged data set
                raise ConvertError(f"the instance cannot be read ({type(exc).__name__})") from None
        return out

    def _add_to_sheet(self, relpath: str, image: Image.Image, record: Mapping[str, Any]) -> None:
        thumb = image.convert("RGB")
        thumb.thumbnail((SHEET_TILE, SHEET_TILE), Image.Resampling.LANCZOS)
        folder = relpath.rsplit("/", 1)[0] if "/" in relpath else ""
        number = record.get("InstanceNumber")
        with self._lock:
            assert self._sheets is not None
            self._sheets.setdefault(folder, []).append(
                (number if isinstance(number, int) else 1 << 30, thumb)
            )

    def extra_files(self) -> list[tuple[str, bytes]]:
        """The contact sheets, one per series folder (when asked for)."""
        if not self._sheets:
            return []
        out = []
        for folder, thumbs in sorted(self._sheets.items()):
            thumbs.sort(key=lambda t: t[0])
            columns = min(SHEET_COLUMNS, len(thumbs))
            rows = math.ceil(len(thumbs) / columns)
            sheet = Image.new("RGB", (columns * SHEET_TILE, rows * SHEET_TILE), "black")
            for n, (_, thumb) in enumerate(thumbs):
                x, y = (n % columns) * SHEET_TILE, (n // columns) * SHEET_TILE
                sheet.paste(
                    thumb, (x + (SHEET_TILE - thumb.width) // 2, y + (SHEET_TILE - thumb.height) // 2)
                )
            out.append((f"{folder}/{SHEET_NAME}" if folder else SHEET_NAME, encode(sheet, ImageFormat.PNG)))
        return out
