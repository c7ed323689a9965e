"""Answers shared by the DICOMweb endpoints: DICOM JSON (ETag, gzip) and the server's origin."""

from __future__ import annotations

import gzip

from starlette.requests import Request
from starlette.responses import Response

DICOM_JSON = "application/dicom+json"
_GZIP_MIN = 1024


def json_response(request: Request, data: bytes, etag: str | None = None) -> Response:
    """A DICOM JSON answer: 304 when the client has this ETag, gzip when it asks for it."""
    headers = {"Vary": "Accept-Encoding"}
    if etag is not None:
        headers["ETag"] = f'"{etag}"'
        if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', f'W/"{etag}"', "*"):
            return Response(status_code=304, headers=headers)
    if len(data) >= _GZIP_MIN and "gzip" in request.headers.get("accept-encoding", ""):
        data = gzip.compress(data, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return Response(data, media_type=DICOM_JSON, headers=headers)


def origin(request: Request) -> str:
    """`scheme://host:port` for the absolute URLs of answers (RetrieveURL, BulkDataURI): a
    proxy's X-Forwarded-Host as given; else the Host header, with the port the connection came
    in on when the header names none (some clients, dicomweb-client among them, leave it out)."""
    forwarded = request.headers.get("x-forwarded-host")
    if forwarded:
        scheme = request.headers.get("x-forwarded-proto", request.url.scheme)
        return f"{scheme}://{forwarded.split(',')[0].strip()}"
    netloc = request.headers.get("host") or request.url.netloc
    server = request.scope.get("server")
    default = 443 if request.url.scheme == "https" else 80
    if server and not netloc.endswith("]") and ":" not in netloc.rsplit("]", 1)[-1] and server[1] != default:
        netloc = f"{netloc}:{server[1]}"
    return f"{request.url.scheme}://{netloc}"


def ranged(request: Request, data: bytes, media_type: str) -> Response:
    """`data` as one body, honouring a single `Range: bytes=...` (206, or 416 when unsatisfiable)."""
    size = len(data)
    header = request.headers.get("range", "")
    headers = {"Accept-Ranges": "bytes"}
    if not header.startswith("bytes=") or "," in header:
        return Response(data, media_type=media_type, headers=headers)
    first, _, last = header[6:].strip().partition("-")
    try:
        if first:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
        else:
            start, end = max(0, size - int(last)), size - 1
    except ValueError:
        return Response(data, media_type=media_type, headers=headers)
    if start > end or start >= size:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(data[start : end + 1], status_code=206, media_type=media_type, headers=headers)
