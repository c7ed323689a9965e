"""Render one frame of a DICOM image for people: the grayscale pipeline of PS3.3 C.11 (Modality
LUT, then VOI LUT or window, then Presentation LUT / MONOCHROME1 inversion), colour kept.

The API other capabilities use (export's png/jpeg, DICOMweb's /rendered and /thumbnail):

    image = render_frame(ds, frame=0, window=Window(40, 400), size=256)   # a PIL image, L or RGB
    data = encode(image, ImageFormat.PNG)                                   # PNG or JPEG bytes
"""

from pacsctl.render.encoding import ImageFormat, encode
from pacsctl.render.frame import RenderError, Window, frame_count, render_frame

__all__ = ["ImageFormat", "RenderError", "Window", "encode", "frame_count", "render_frame"]
