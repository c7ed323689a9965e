"""STOW-RS (PS3.18 10.5): `POST /studies[/{study}]` of multipart/related application/dicom.

The body is parsed as it arrives, each part streamed into a private temp file in `ARCHIVE/tmp/`
(hashed on the way). Only once the whole body is in does anything go into the archive, through
the archive's ingest steps (`Archive.begin_ingest`, `sync`, `name`, `sync`: durable and indexed
before the answer; duplicates, conflicts and quarantine as for every other way in), a batch at a
time. A client that disconnects, a body that is malformed, too large or too slow: every temp
file is removed and nothing is stored. The answer lists ReferencedSOPSequence and
FailedSOPSequence (PS3.18 Table 10.5.3-1); 200 when all were stored, 202 when some failed, 409
when none was stored, never 200 for a request that stored nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from pacsctl.archive.archive import DUPLICATE, QUARANTINED, SKIPPED, STORED, IngestBatch
from pacsctl.errors import StorageFullError
from pacsctl.storage import files
from pacsctl.web.errors import WebError
from pacsctl.web.multipart import MalformedMultipart, MultipartParser, boundary_of
from pacsctl.web.responses import DICOM_JSON, origin
from pacsctl.web.tokens import Token

LOG = logging.getLogger(__name__)

# PS3.18 / PS3.4 failure reasons
PROCESSING_FAILURE = 0x0110
DUPLICATE_CONFLICT = 0x0111  # a different instance with this SOP Instance UID is archived
OUT_OF_RESOURCES = 0xA700
NOT_OF_THIS_STUDY = 0xA900  # data set does not match: another study than the path's or the token's
CANNOT_UNDERSTAND = 0xC000
_BATCH_BYTES = 256 << 20  # at most this much of the request in memory while it is checked


@dataclass
class _TempPart:
    """One part's body on its way to a temp file in tmp/."""

    path: Path
    content_type: str
    fd: int = -1
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.digest.update(data)
        self.size += len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class _Outcome:
    """What became of one part: stored (referenced) or failed, with its UIDs."""

    sop_class: str = ""
    sop_instance: str = ""
    failure: int | None = None
    reason: str = ""


class _Receiver:
    """The temp files of one request, removed unless handed to the archive."""

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.parts: list[_TempPart] = []

    def open_part(self, headers: dict[str, str]) -> _TempPart:
        part = _TempPart(files.temp_name(self.tmp_dir), headers.get("content-type", "application/dicom"))
        part.fd = os.open(part.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, files.FILE_MODE)
        self.parts.append(part)
        return part

    def discard(self) -> None:
        for part in self.parts:
            part.close()
            part.path.unlink(missing_ok=True)


async def store_request(request: Request, ctx: Any, token: Token) -> Response:
    """The STOW-RS endpoint (`ctx`: the app's WebContext; `token` may write)."""
    study = request.path_params.get("study")
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    boundary = boundary_of(content_type)
    if media != "multipart/related" or boundary is None:
        raise WebError(
            415,
            "STOW-RS takes multipart/related with a boundary",
            hint='Content-Type: multipart/related; type="application/dicom"; boundary=...',
        )
    part_type = _param(content_type, "type")
    if part_type and part_type.lower() != "application/dicom":
        raise WebError(415, f"parts of type {part_type} are not stored here (application/dicom only)")
    limit = ctx.options.max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise WebError(413, f"the body is larger than --web-max-body ({limit} bytes)")
    receiver = _Receiver(ctx.archive.tmp_dir)
    try:
        await _receive(request, receiver, boundary, limit, ctx.options.request_timeout)
        ingest = functools.partial(_ingest, ctx, receiver, study, token, _origin_of_part(request, token))
        outcomes = await anyio.to_thread.run_sync(ingest)
    except BaseException:
        receiver.discard()
        raise
    return _answer(request, ctx, study, outcomes)


async def _receive(request: Request, receiver: _Receiver, boundary: str, limit: int, timeout: float) -> None:
    parser = MultipartParser(boundary, receiver.open_part)
    received = 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise WebError(413, f"the body is larger than --web-max-body ({limit} bytes)")
                parser.feed(chunk)
        parser.finish()
    except TimeoutError:
        raise WebError(408, f"the body did not arrive within {timeout:.0f} s; nothing was stored") from None
    except MalformedMultipart as exc:
        raise WebError(400, f"malformed multipart body: {exc}; nothing was stored") from None
    except ClientDisconnect:
        raise WebError(400, "the client disconnected before the body ended; nothing was stored") from None
    finally:
        for part in receiver.parts:
            part.close()


def _origin_of_part(request: Request, token: Token) -> str:
    peer = request.client.host if request.client else "?"
    return f"dicomweb://{token.id}@{peer}"


def _ingest(ctx: Any, receiver: _Receiver, study: str | None, token: Token, origin: str) -> list[_Outcome]:
    """Every received part through the archive's ingest, in batches of bounded size."""
    outcomes: list[_Outcome] = []
    touched: set[str] = set()  # series stored into
    batch: list[_TempPart] = []
    size = 0
    pending = list(receiver.parts)
    receiver.parts = []  # from here on each part is the archive's (or removed below)
    for i, part in enumerate(pending):
        if part.content_type.split(";")[0].strip().lower() not in ("application/dicom", ""):
            part.path.unlink(missing_ok=True)
            outcomes.append(_Outcome(failure=CANNOT_UNDERSTAND, reason=f"part of type {part.content_type}"))
            continue
        batch.append(part)
        size += part.size
        if size >= _BATCH_BYTES or i == len(pending) - 1:
            outcomes.extend(_ingest_batch(ctx, batch, study, token, origin, touched))
            batch, size = [], 0
    if batch:
        outcomes.extend(_ingest_batch(ctx, batch, study, token, origin, touched))
    if any(o.failure is None for o in outcomes):
        # Fold what this request journaled: every read of the index applies the unfolded
        # journal lines, and a web process reads far more often than it stores (measured:
        # 1000 unfolded lines made /metadata of 10 studies 0.9 s instead of 0.15 s).
        try:
            with ctx.lock:
                ctx.archive.index.flush()
        except OSError as exc:  # stored and durable already; the next fold retries
            LOG.warning("could not fold the index journal: %s", exc.strerror or exc)
        if ctx.warmer is not None:  # their metadata before anyone asks for it
            ctx.warmer.touched(sorted(touched))
    return outcomes


def _ingest_batch(
    ctx: Any, parts: list[_TempPart], study: str | None, token: Token, origin: str, touched: set[str]
) -> list[_Outcome]:
    archive = ctx.archive
    items = [
        (part.path.read_bytes(), origin, files.StagedFile(part.path, part.size, part.digest.hexdigest()))
        for part in parts
    ]
    try:
        batch = archive.begin_ingest(items)
    except StorageFullError:
        for part in parts:
            part.path.unlink(missing_ok=True)
        return [_Outcome(failure=OUT_OF_RESOURCES, reason="the archive's disk is full") for _ in parts]
    outcomes: list[_Outcome | None] = [None] * len(parts)
    for i, result in enumerate(batch.results):
        if result is not None:  # refused by the check: skipped (not DICOM) or quarantined
            if result.status == SKIPPED:
                parts[i].path.unlink(missing_ok=True)
            outcomes[i] = _Outcome("", result.sop_instance_uid, CANNOT_UNDERSTAND, result.reason)
    _refuse_out_of_scope(batch, study, token, outcomes)
    for i, inst, _stage in batch.staged:
        outcomes[i] = _Outcome(inst.sop_class_uid, inst.sop_instance_uid)
        touched.add(str(inst.fields().get("SeriesInstanceUID", "")))
    if batch.staged:
        try:
            _commit(ctx, batch)
        except Exception as exc:
            reason = OUT_OF_RESOURCES if isinstance(exc, StorageFullError) else PROCESSING_FAILURE
            for i, _inst, _stage in batch.staged:
                outcome = outcomes[i]
                assert outcome is not None
                outcome.failure, outcome.reason = reason, "could not store"
            return [o for o in outcomes if o is not None]
        for i, result in enumerate(batch.results):
            outcome = outcomes[i]
            if result is None or outcome is None or outcome.failure is not None:
                continue
            if result.status == QUARANTINED:
                conflict = result.conflict
                outcome.failure = DUPLICATE_CONFLICT if conflict else CANNOT_UNDERSTAND
                outcome.reason = result.reason
            elif result.status not in (STORED, DUPLICATE):
                outcome.failure, outcome.reason = PROCESSING_FAILURE, result.reason
    return [o for o in outcomes if o is not None]


def _refuse_out_of_scope(
    batch: IngestBatch, study: str | None, token: Token, outcomes: list[_Outcome | None]
) -> None:
    """Not stored: with POST /studies/{study}, an instance of another study (PS3.18 10.5.1);
    with a scoped token, an instance outside its studies or patient."""
    kept = []
    for entry in batch.staged:
        i, inst, stage = entry
        fields = inst.fields()
        its_study = str(fields.get("StudyInstanceUID", ""))
        if study is not None and its_study != study:
            reason = "instance of another study"
        elif not token.allows_study(its_study, fields.get("PatientID")):
            reason = "outside the token's scope"
        else:
            kept.append(entry)
            continue
        stage.temp_path.unlink(missing_ok=True)
        outcomes[i] = _Outcome(inst.sop_class_uid, inst.sop_instance_uid, NOT_OF_THIS_STUDY, reason)
    batch.staged = kept


def _commit(ctx: Any, batch: IngestBatch) -> None:
    """Durable, named and indexed: the archive's ingest steps, the naming under the lock that
    guards this process's index journal."""
    archive = ctx.archive
    try:
        archive.sync([batch])
    except Exception:
        archive.discard(batch)
        raise
    with ctx.lock:
        archive.name(batch)
        archive.index.fold_if_due()
    archive.sync([batch])


def _param(content_type: str, name: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def _answer(request: Request, ctx: Any, study: str | None, outcomes: list[_Outcome]) -> Response:
    base = origin(request) + "/dicom-web"
    referenced, failed = [], []
    for o in outcomes:
        if o.failure is None:
            referenced.append(
                {
                    "00081150": {"vr": "UI", "Value": [o.sop_class]},
                    "00081155": {"vr": "UI", "Value": [o.sop_instance]},
                }
            )
        else:
            item: dict[str, Any] = {"00081197": {"vr": "US", "Value": [o.failure]}}
            if o.sop_class:
                item["00081150"] = {"vr": "UI", "Value": [o.sop_class]}
            if o.sop_instance:
                item["00081155"] = {"vr": "UI", "Value": [o.sop_instance]}
            failed.append(item)
    body: dict[str, Any] = {}
    if study:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": referenced}
    status = 200 if not failed else 202 if referenced else 409
    request.state.audit.update(
        stored=len(referenced),
        failed=len(failed),
        failures=sorted({f"0x{o.failure:04X}" for o in outcomes if o.failure is not None}),
    )
    return Response(json.dumps(body).encode(), status_code=status, media_type=DICOM_JSON)
