"""The DICOMweb application (starlette): routes under `/dicom-web`, token checks, CORS, audit.

Every request under `/dicom-web` needs a live token (`Authorization: Bearer T`, or `?token=T`
for viewer links); without one: 401. A scoped token gets 404 for any study outside its scope
(absent and forbidden are not told apart). Every answered request is audited (event `web`:
token id, peer, method, path with its UIDs, status, counts; query values never, they may be
names). The index is read under one lock per process, as the DIMSE side does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from pacsctl.archive.archive import AUDIT_LOG, Archive
from pacsctl.archive.audit import AuditEvent, AuditLog
from pacsctl.dicom.matching import QueryLevel
from pacsctl.errors import InvalidQueryError
from pacsctl.web import metadata, qido, wado
from pacsctl.web import rendered as rendering
from pacsctl.web.errors import WebError, not_found
from pacsctl.web.responses import json_response, origin, ranged
from pacsctl.web.stow import store_request
from pacsctl.web.tokens import Token, TokenStore

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
PAGE_DIR = Path(__file__).parent / "page"
_PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "viewer.js": "text/javascript",
    "viewer.css": "text/css",
}


@dataclass
class WebOptions:
    """How `serve --web-port` serves: address, TLS, CORS origins, limits."""

    host: str = "127.0.0.1"
    port: int = 0
    cors: tuple[str, ...] = ()
    max_body: int = 4 << 30  # bytes a STOW request may carry
    tls_cert: str | None = None
    tls_key: str | None = None
    request_timeout: float = 300.0  # seconds a request body may take to arrive (slow clients)


@dataclass
class WebContext:
    """What every request handler shares: the archive, its tokens, caches and audit log."""

    archive: Archive
    options: WebOptions
    tokens: TokenStore = field(init=False)
    cache: metadata.MetadataCache = field(init=False)
    audit: AuditLog = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)  # the index, per process
    warmer: metadata.Warmer | None = None  # fills metadata caches in the background (run_web)

    def __post_init__(self) -> None:
        self.tokens = TokenStore(self.archive.root, self.archive.tmp_dir)
        self.cache = metadata.MetadataCache(self.archive.root, self.archive.tmp_dir)
        self.audit = AuditLog(self.archive.root / AUDIT_LOG)


Handler = Callable[[Request, WebContext, Token], Awaitable[Response]]


def build_app(ctx: WebContext) -> Starlette:
    """The ASGI application over `ctx`."""

    def guarded(handler: Handler, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            token: Token | None = None
            details: dict[str, Any] = {}
            request.state.audit = details
            try:
                token = authenticate(request, ctx.tokens)
                if write and not token.write:
                    raise WebError(
                        403, "this token is read-only", hint="create one with `token create --write`"
                    )
                for name in ("study", "series", "instance"):
                    value = str(request.path_params.get(name, "0"))
                    if not _UID.fullmatch(value) or len(value) > 64:
                        raise WebError(400, f"{name} is not a valid UID")
                response = await handler(request, ctx, token)
            except WebError as exc:  # its messages are ours: they name no value of the request
                details["reason"] = exc.message
                response = JSONResponse(exc.body(), exc.status)
                if exc.status == 401:
                    response.headers["WWW-Authenticate"] = 'Bearer realm="pacsctl"'
            except InvalidQueryError as exc:  # its message names keywords; hints say how
                response = JSONResponse(WebError(400, str(exc), exc.hint).body(), 400)
            _audit(ctx, request, token, response.status_code, details)
            return response

        return endpoint

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/page/{name}", page, methods=["GET"]),
        Route("/dicom-web/studies", guarded(search_studies), methods=["GET"]),
        Route("/dicom-web/series", guarded(search_level(QueryLevel.SERIES)), methods=["GET"]),
        Route("/dicom-web/instances", guarded(search_level(QueryLevel.IMAGE)), methods=["GET"]),
        Route("/dicom-web/studies/{study}", guarded(retrieve), methods=["GET"]),
        Route("/dicom-web/studies/{study}/metadata", guarded(study_metadata), methods=["GET"]),
        Route("/dicom-web/studies/{study}/series", guarded(search_level(QueryLevel.SERIES)), methods=["GET"]),
        Route(
            "/dicom-web/studies/{study}/instances", guarded(search_level(QueryLevel.IMAGE)), methods=["GET"]
        ),
        Route("/dicom-web/studies/{study}/series/{series}", guarded(retrieve), methods=["GET"]),
        Route(
            "/dicom-web/studies/{study}/series/{series}/metadata", guarded(series_metadata), methods=["GET"]
        ),
        Route(
            "/dicom-web/studies/{study}/series/{series}/instances",
            guarded(search_level(QueryLevel.IMAGE)),
            methods=["GET"],
        ),
        Route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            guarded(retrieve),
            methods=["GET"],
        ),
        Route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
            guarded(instance_metadata),
            methods=["GET"],
        ),
        *_pixel_routes(guarded),
    ]
    stow_routes = _stow_routes(guarded)
    middleware = []
    if ctx.options.cors:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(ctx.options.cors),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Accept", "If-None-Match", "Range"],
                expose_headers=["ETag", "Content-Length", "Content-Range", "Content-Location"],
            )
        )
    return Starlette(routes=stow_routes + routes, middleware=middleware)


def _stow_routes(guarded: Callable[..., Callable[[Request], Awaitable[Response]]]) -> list[Route]:
    return [
        Route("/dicom-web/studies", guarded(store_request, write=True), methods=["POST"]),
        Route("/dicom-web/studies/{study}", guarded(store_request, write=True), methods=["POST"]),
    ]


def _pixel_routes(guarded: Callable[..., Callable[[Request], Awaitable[Response]]]) -> list[Route]:
    instance = "/dicom-web/studies/{study}/series/{series}/instances/{instance}"
    return [
        Route("/dicom-web/studies/{study}/thumbnail", guarded(thumbnail), methods=["GET"]),
        Route("/dicom-web/studies/{study}/series/{series}/thumbnail", guarded(thumbnail), methods=["GET"]),
        Route(instance + "/thumbnail", guarded(thumbnail), methods=["GET"]),
        Route(instance + "/rendered", guarded(rendered), methods=["GET"]),
        Route(instance + "/frames/{frames}/rendered", guarded(rendered), methods=["GET"]),
        Route(instance + "/frames/{frames}/thumbnail", guarded(thumbnail), methods=["GET"]),
        Route(instance + "/frames/{frames}", guarded(frames), methods=["GET"]),
        Route(instance + "/bulkdata/{tag}", guarded(bulkdata), methods=["GET"]),
    ]


def authenticate(request: Request, tokens: TokenStore) -> Token:
    """The request's live token (Bearer header, else `token` query parameter); else 401."""
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header[:7].lower() == "bearer " else request.query_params.get("token", "")
    if not secret:
        raise WebError(
            401, "a token is required", hint="send Authorization: Bearer TOKEN (`pacsctl token create`)"
        )
    token = tokens.lookup(secret)
    if token is None:
        raise WebError(
            401, "the token is unknown, revoked or expired", hint="create a new one: `pacsctl token create`"
        )
    return token


def _audit(
    ctx: WebContext, request: Request, token: Token | None, status: int, details: dict[str, Any]
) -> None:
    record: dict[str, Any] = {
        "event": AuditEvent.WEB.value,
        "token": token.id if token else None,
        "peer": request.client.host if request.client else None,
        "method": request.method,
        "path": request.url.path,  # UIDs only: the path parameters are checked to be UIDs
        "status": str(status),
    }
    if request.query_params:
        record["query_keys"] = sorted(set(request.query_params.keys()) - {"token"})
    record.update(details)
    for name in ("study", "series", "instance"):
        if name in request.path_params:
            key = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}
            record[key[name]] = request.path_params[name]
    ctx.audit.append(record)


# -- QIDO-RS ---------------------------------------------------------------------------------


async def search_studies(request: Request, ctx: WebContext, token: Token) -> Response:
    return await _search(request, ctx, token, QueryLevel.STUDY)


def search_level(level: QueryLevel) -> Handler:
    async def handler(request: Request, ctx: WebContext, token: Token) -> Response:
        return await _search(request, ctx, token, level)

    return handler


async def _search(request: Request, ctx: WebContext, token: Token, level: QueryLevel) -> Response:
    import json

    path_uids = {}
    if "study" in request.path_params:
        path_uids["StudyInstanceUID"] = request.path_params["study"]
    if "series" in request.path_params:
        path_uids["SeriesInstanceUID"] = request.path_params["series"]
    query = qido.QidoQuery.parse(level, request.query_params.multi_items(), path_uids)

    def run() -> list[dict[str, Any]]:
        with ctx.lock:
            return qido.search(ctx.archive.index, query, token, origin(request) + "/dicom-web")

    answers = await run_in_threadpool(run)
    request.state.audit.update(level=level.value, count=len(answers))
    return json_response(request, json.dumps(answers, separators=(",", ":"), ensure_ascii=False).encode())


# -- WADO-RS ---------------------------------------------------------------------------------


def _instances(
    ctx: WebContext, token: Token, study: str, series: str | None = None, instance: str | None = None
) -> list[dict[str, Any]]:
    """The instance records under a path, in series and instance order; 404 when there are
    none or the study is outside the token's scope."""
    with ctx.lock:
        studies = ctx.archive.index.studies(study_uids=[study])
        if not studies or not token.allows_study(study, studies[0].get("PatientID")):
            raise not_found("study")
        records = ctx.archive.index.instances(study_uids=[study], series_uids=[series] if series else None)
    if instance is not None:
        records = [r for r in records if r.get("SOPInstanceUID") == instance]
    if not records:
        raise not_found("instance" if instance else "series" if series else "study")
    records.sort(
        key=lambda r: (
            str(r.get("SeriesInstanceUID")),
            metadata._number(r.get("InstanceNumber")),
            str(r.get("SOPInstanceUID")),
        )
    )
    return records


async def retrieve(request: Request, ctx: WebContext, token: Token) -> Response:
    p = request.path_params
    accept = wado.parse_accept(request.headers.get("accept"))
    if "instance" in p and any(r.media_type == "application/dicom" for r in accept):
        # one instance as a single part, as stored: Range applies (a resumed download)
        record = (await run_in_threadpool(_instances, ctx, token, p["study"], p["series"], p["instance"]))[0]
        request.state.audit.update(count=1)
        return FileResponse(ctx.archive.root / str(record["path"]), media_type="application/dicom")

    def parts() -> list[wado.Part]:
        records = _instances(ctx, token, p["study"], p.get("series"), p.get("instance"))
        return wado.instance_parts(ctx.archive.root, records, accept)

    body = wado.Multipart("application/dicom", await run_in_threadpool(parts))
    request.state.audit.update(count=len(body.parts))
    headers = {}
    length = body.length()
    if length is not None:
        headers["Content-Length"] = str(length)
    return StreamingResponse(body.chunks(), media_type=body.content_type, headers=headers)


async def study_metadata(request: Request, ctx: WebContext, token: Token) -> Response:
    return await _metadata(request, ctx, token, by_instance=None)


async def series_metadata(request: Request, ctx: WebContext, token: Token) -> Response:
    return await _metadata(request, ctx, token, by_instance=None)


async def instance_metadata(request: Request, ctx: WebContext, token: Token) -> Response:
    return await _metadata(request, ctx, token, by_instance=request.path_params["instance"])


async def _metadata(request: Request, ctx: WebContext, token: Token, by_instance: str | None) -> Response:
    import json

    p = request.path_params

    def build() -> tuple[bytes, str]:
        records = _instances(ctx, token, p["study"], p.get("series"))
        by_series: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            by_series.setdefault(str(record["SeriesInstanceUID"]), []).append(record)
        arrays, keys = [], []
        for uid, series in by_series.items():
            data, key = ctx.cache.series_json(uid, series)
            arrays.append(data)
            keys.append(key)
        if by_instance is not None:
            headers = [h for h in json.loads(arrays[0]) if _sop_uid(h) == by_instance]
            if not headers:
                raise not_found("instance")
            return json.dumps(headers, separators=(",", ":")).encode(), metadata.combined_key(
                [*keys, by_instance]
            )
        return metadata.join_arrays(arrays), metadata.combined_key(keys)

    data, etag = await run_in_threadpool(build)
    return json_response(request, metadata.absolute_bulk_uris(data, origin(request)), etag)


def _sop_uid(header: dict[str, Any]) -> str:
    return str((header.get("00080018", {}).get("Value") or [""])[0])


# -- rendered images, frames, bulk data -----------------------------------------------------


async def rendered(request: Request, ctx: WebContext, token: Token) -> Response:
    return await _render(request, ctx, token, thumbnail=False)


async def thumbnail(request: Request, ctx: WebContext, token: Token) -> Response:
    return await _render(request, ctx, token, thumbnail=True)


async def _render(request: Request, ctx: WebContext, token: Token, thumbnail: bool) -> Response:
    p = request.path_params
    accept = wado.parse_accept(request.headers.get("accept"))
    wanted = rendering.RenderRequest.parse(accept, request.query_params, thumbnail)
    frame = rendering.parse_frame_list(p["frames"])[0] if "frames" in p else 1

    def run() -> bytes:
        records = _instances(ctx, token, p["study"], p.get("series"), p.get("instance"))
        record = rendering.middle(records) if "instance" not in p else records[0]
        return rendering.render(ctx.archive.root / str(record["path"]), frame, wanted)

    data = await run_in_threadpool(run)
    return Response(data, media_type=wanted.fmt.media_type, headers={"Cache-Control": "private, max-age=300"})


async def frames(request: Request, ctx: WebContext, token: Token) -> Response:
    p = request.path_params
    numbers = rendering.parse_frame_list(p["frames"])
    accept = wado.parse_accept(
        request.headers.get("accept") or 'multipart/related; type="application/octet-stream"'
    )

    def run() -> list[wado.Part]:
        record = _instances(ctx, token, p["study"], p["series"], p["instance"])[0]
        return rendering.frame_parts(ctx.archive.root / str(record["path"]), numbers, accept)

    parts = await run_in_threadpool(run)
    body = wado.Multipart(parts[0].content_type.split(";")[0], parts)
    request.state.audit.update(count=len(parts))
    return Response(b"".join(body.chunks()), media_type=body.content_type)


async def bulkdata(request: Request, ctx: WebContext, token: Token) -> Response:
    p = request.path_params
    tag_text = str(p["tag"])
    if not re.fullmatch(r"[0-9A-Fa-f]{8}", tag_text):
        raise WebError(400, "bulk data is named by its tag, 8 hex digits (e.g. 7FE00010)")

    def run() -> bytes:
        record = _instances(ctx, token, p["study"], p["series"], p["instance"])[0]
        return rendering.bulk_value(ctx.archive.root / str(record["path"]), int(tag_text, 16))

    data = await run_in_threadpool(run)
    accept = wado.parse_accept(request.headers.get("accept"))
    if any(r.media_type == "application/octet-stream" for r in accept) or "range" in request.headers:
        return ranged(request, data, "application/octet-stream")  # a single part: Range applies
    body = wado.Multipart("application/octet-stream", [wado.Part("application/octet-stream", data=data)])
    return Response(b"".join(body.chunks()), media_type=body.content_type)


# -- the page --------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    """The viewer page's static files (no patient data in them: they ask the API with the
    link's token)."""
    name = request.path_params.get("name", "index.html")
    if name not in _PAGE_FILES or not (PAGE_DIR / name).is_file():
        return JSONResponse({"error": "not found"}, 404)
    return FileResponse(PAGE_DIR / name, media_type=_PAGE_FILES[name])
