"""Sending stored instances: which presentation contexts to propose, and how to send one file.

Policy (DESIGN.md, `Encoding`): propose the stored transfer syntax plus uncompressed; send the
stored bytes untouched when the peer accepted the stored syntax, else decompress and send
uncompressed.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext, build_context

import pacsctl.net.setup  # noqa: F401  (pynetdicom settings: chunked send, no identifier logs)
from pacsctl.net.fastpath import sendstore
from pacsctl.net.types import StoreFailure

LOG = logging.getLogger(__name__)

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_REQUESTED_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255


@dataclass(frozen=True)
class FileInfo:
    """The identity and encoding of one DICOM file, read from its File Meta only."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    has_meta: bool = True
    data_offset: int | None = None  # where the data set starts, when the File Meta was scanned


def set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: turn off Nagle on the association's socket.

    pynetdicom leaves it on; with small DIMSE responses that costs ~40 ms per message."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # already closed by the peer
            pass


NODELAY_HANDLER: tuple[Any, Any] = (evt.EVT_CONN_OPEN, set_nodelay)


def file_info(path: str | Path) -> FileInfo:
    """Read the identity of a DICOM file cheaply (File Meta, or the data set head when the
    file has no meta). Raises pydicom's InvalidDicomError / OSError for unreadable files."""
    path = Path(path)
    if sendstore.enabled():
        raw = sendstore.file_meta(path)
        if raw is not None:
            return FileInfo(
                path, raw.sop_class_uid, raw.sop_instance_uid, raw.transfer_syntax_uid, True, raw.data_offset
            )
    try:
        meta, _ = split_dataset(path)
        return FileInfo(
            path,
            str(meta.MediaStorageSOPClassUID),
            str(meta.MediaStorageSOPInstanceUID),
            str(meta.TransferSyntaxUID),
        )
    except (AttributeError, KeyError, ValueError, TypeError, EOFError):
        pass
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None:
        ts = ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian
    return FileInfo(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ts), has_meta=False)


def contexts_for(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Presentation contexts to propose for (SOP class, stored transfer syntax) pairs.

    Each SOP class gets one context per stored syntax and one uncompressed context (explicit +
    implicit VR little endian), so a peer may accept or refuse each on its own.
    Capped at 128 contexts; SOP classes beyond that are left out (their sends fail per file).
    """
    by_class: dict[str, list[str]] = {}
    for sop_class, ts in pairs:
        syntaxes = by_class.setdefault(sop_class, [])
        if ts not in syntaxes:
            syntaxes.append(ts)
    contexts: list[PresentationContext] = []
    for sop_class, syntaxes in by_class.items():
        # The stored syntax alone first, so an acceptor that takes the first proposed syntax
        # (as most do) gets the bytes as stored; then uncompressed as the fallback.
        for ts in syntaxes:
            contexts.append(build_context(sop_class, [ts]))
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    if len(contexts) > MAX_REQUESTED_CONTEXTS:
        LOG.warning("%d presentation contexts needed, proposing the first 128", len(contexts))
        contexts = contexts[:MAX_REQUESTED_CONTEXTS]
    return contexts


def accepted_syntaxes(assoc: Association, sop_class_uid: str, role: str = "scu") -> set[str]:
    """Transfer syntaxes the peer accepted for `sop_class_uid` (for us acting in `role`)."""
    out: set[str] = set()
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax != sop_class_uid or not cx.transfer_syntax:
            continue
        if role == "scp" and not cx.as_scp:
            continue
        if role == "scu" and not cx.as_scu:
            continue
        out.add(str(cx.transfer_syntax[0]))
    return out


class Encoding(Enum):
    """How a file goes to a peer, decided from the syntaxes it accepted (DESIGN.md policy)."""

    AS_STORED = "as stored"  # the stored syntax was accepted: the file's own bytes, in chunks
    RE_ENCODED = "re-encoded"  # stored syntax accepted, bytes unusable as they are (no File
    #                            Meta, odd-length deflate): decoded and encoded in that syntax
    UNCOMPRESSED = "uncompressed"  # only uncompressed was accepted: decoded, decompressed


class NotSendable(ValueError):
    """The peer accepted no syntax this file can be sent in (or the policy forbids the one)."""


class Decompress(StrEnum):
    """When a compressed file may be decompressed for a peer that does not accept its syntax
    (dcmsend's --decompress-never/-lossless/-lossy): a lossy image decompressed would reach
    the peer looking like an original."""

    NEVER = "never"
    LOSSLESS = "lossless"  # only what compression kept whole: nothing is lost or disguised
    LOSSY = "lossy"  # anything, lossy images included


# Compressed syntaxes that keep every pixel (PS3.5 Annex A); every other compressed one is
# lossy or may be (JPEG 2000 and HTJ2K "lossless or lossy" count as lossy).
LOSSLESS_COMPRESSED = frozenset(
    {
        "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Non-Hierarchical (Process 14)
        "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
        "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 (Lossless Only)
        "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component (Lossless Only)
        "1.2.840.10008.1.2.4.201",  # HTJ2K (Lossless Only)
        "1.2.840.10008.1.2.4.202",  # HTJ2K with RPCL Options (Lossless Only)
        "1.2.840.10008.1.2.5",  # RLE Lossless
    }
)


def may_decompress(transfer_syntax_uid: str, policy: Decompress) -> bool:
    """Whether `policy` allows decompressing data stored in this (compressed) syntax."""
    if policy is Decompress.LOSSY:
        return True
    return policy is Decompress.LOSSLESS and transfer_syntax_uid in LOSSLESS_COMPRESSED


def choose_encoding(
    info: FileInfo, accepted: set[str], decompress: Decompress = Decompress.LOSSLESS
) -> tuple[Encoding, str]:
    """How to send `info` given the syntaxes the peer accepted, and in which syntax.
    Raises NotSendable when it accepted neither the stored syntax nor an uncompressed one, or
    only an uncompressed one that `decompress` does not allow for this file."""
    ts = info.transfer_syntax_uid
    if ts in accepted:
        if info.has_meta and not _odd_deflated(info):
            return Encoding.AS_STORED, ts
        return Encoding.RE_ENCODED, ts
    target = next((t for t in UNCOMPRESSED if t in accepted), None)
    if target is None:
        raise NotSendable(f"peer accepted neither {UID(ts).name} nor an uncompressed syntax")
    if UID(ts).is_compressed and not may_decompress(ts, decompress):
        kind = "lossy-compressed" if ts not in LOSSLESS_COMPRESSED else "compressed"
        allow = "lossless or lossy" if decompress is Decompress.NEVER else "lossy"
        raise NotSendable(
            f"peer accepts only uncompressed for this SOP class and the image is {kind} "
            f"({UID(ts).name}); not decompressed under --decompress {decompress.value} "
            f"(--decompress {allow} would send it decompressed)"
        )
    return Encoding.UNCOMPRESSED, target


def load_for_peer(
    info: FileInfo, accepted: set[str], decompress: Decompress = Decompress.LOSSLESS
) -> tuple[str | Path | Dataset, str]:
    """What to hand `send_c_store` for this file given the syntaxes the peer accepted.

    Returns (path or dataset, transfer syntax used): the path (sent as stored, in chunks), or
    a decoded data set (`choose_encoding`). Raises NotSendable (a ValueError) when nothing
    usable was accepted or `decompress` forbids it; decoding and decompression errors
    propagate."""
    encoding, target = choose_encoding(info, accepted, decompress)
    if encoding is Encoding.AS_STORED:
        return info.path, target
    ds = pydicom.dcmread(info.path, force=True)
    if encoding is Encoding.UNCOMPRESSED and UID(info.transfer_syntax_uid).is_compressed:
        # Same instance, other encoding: keep the SOP Instance UID (pydicom would mint one).
        ds.decompress(generate_instance_uid=False)
    _ensure_meta(ds, info, target)
    return ds, target


def _odd_deflated(info: FileInfo) -> bool:
    """A deflated data set of odd length (PS3.5 A.5 wants it padded): sent as stored, peers such
    as Orthanc refuse the odd fragment and the association hangs, so it is re-encoded instead
    (pynetdicom pads what it deflates)."""
    if info.transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
        return False
    _meta, offset = split_dataset(info.path)
    return (info.path.stat().st_size - offset) % 2 == 1


def _ensure_meta(ds: Dataset, info: FileInfo, ts: str) -> None:
    """Give `ds` the file meta pynetdicom reads the transfer syntax from."""
    meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = info.sop_class_uid
    meta.MediaStorageSOPInstanceUID = info.sop_instance_uid
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta


@dataclass(frozen=True)
class FileSent:
    """What became of one file sent over an association."""

    status: int | None  # the peer's status; None when it never answered
    transfer_syntax_uid: str | None  # what went on the wire
    failure: StoreFailure | None = None  # set when `status` is None
    error: str | None = None  # for people


def send_file(
    assoc: Association,
    info: FileInfo,
    msg_id: int = 1,
    originator_aet: str | None = None,
    originator_id: int | None = None,
    decompress: Decompress = Decompress.LOSSLESS,
    next_info: FileInfo | None = None,
) -> FileSent:
    """Send one file over an established association (`decompress`: `choose_encoding`).

    A file sent as stored goes through the send fast path (`fastpath.sendstore`) when it can:
    plain TCP, File Meta scanned; else through pynetdicom's `send_c_store`. `next_info`, the
    file to be sent next on this association, is read ahead on the fast path while the peer
    answers this one."""
    if info.data_offset is not None and sendstore.can_send(assoc):
        ahead = None
        if next_info is not None and next_info.data_offset is not None:
            ahead = (next_info.path, next_info.data_offset)
        fast = _send_fast(assoc, info, msg_id, originator_aet, originator_id, decompress, ahead)
        if fast is not None:
            return fast
    try:
        payload, used_ts = load_for_peer(info, accepted_syntaxes(assoc, info.sop_class_uid), decompress)
    except Exception as exc:  # unreadable file, no context, codec missing: this file fails
        return FileSent(None, None, StoreFailure.NOT_SENDABLE, str(exc))
    try:
        rsp = assoc.send_c_store(
            payload, msg_id=msg_id, originator_aet=originator_aet, originator_id=originator_id
        )
    except Exception as exc:  # a data set pydicom cannot encode, or the association went
        failure = StoreFailure.NOT_SENDABLE if assoc.is_established else StoreFailure.NOT_SENT
        return FileSent(None, used_ts, failure, str(exc))
    status = getattr(rsp, "Status", None)
    if status is None:
        return FileSent(None, used_ts, StoreFailure.NO_RESPONSE, "no response (timeout or association lost)")
    return FileSent(int(status), used_ts)


def _send_fast(
    assoc: Association,
    info: FileInfo,
    msg_id: int,
    originator_aet: str | None,
    originator_id: int | None,
    decompress: Decompress,
    prefetch: tuple[Path, int] | None = None,
) -> FileSent | None:
    """`send_file` for a file the peer takes as stored, on the fast path; None when the file
    does not go as stored (pynetdicom's path decodes it then)."""
    accepted = accepted_syntaxes(assoc, info.sop_class_uid)
    try:
        encoding, ts = choose_encoding(info, accepted, decompress)
    except NotSendable as exc:
        return FileSent(None, None, StoreFailure.NOT_SENDABLE, str(exc))
    context_id = _context_id(assoc, info.sop_class_uid, ts) if encoding is Encoding.AS_STORED else None
    if context_id is None or info.data_offset is None:
        return None
    try:
        status = sendstore.send_stored(
            assoc,
            info.path,
            info.data_offset,
            context_id,
            info.sop_class_uid,
            info.sop_instance_uid,
            msg_id,
            originator_aet,
            originator_id,
            prefetch,
        )
    except sendstore.WriteFailed as exc:
        return FileSent(None, ts, StoreFailure.NOT_SENT, f"association lost while sending ({exc})")
    except OSError as exc:
        return FileSent(None, None, StoreFailure.NOT_SENDABLE, f"unreadable: {exc.strerror or exc}")
    if status is None:
        return FileSent(None, ts, StoreFailure.NO_RESPONSE, "no response (timeout or association lost)")
    return FileSent(status, ts)


def _context_id(assoc: Association, sop_class_uid: str, ts: str) -> int | None:
    """The accepted context (us as SCU) for this SOP class in this transfer syntax."""
    for cx in assoc.accepted_contexts:
        if (
            cx.abstract_syntax == sop_class_uid
            and cx.as_scu
            and cx.transfer_syntax
            and cx.transfer_syntax[0] == ts
            and cx.context_id is not None
        ):
            return int(cx.context_id)
    return None


# Syntaxes a C-GET offers each SOP class one context apiece (after uncompressed), so the peer
# sends an instance as it holds it instead of failing to transcode (Orthanc cannot decode
# JPEG 2000 or JPEG-LS, for one). Most common first: the list is cut when classes are many.
GET_SYNTAXES = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",  # RLE
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.1.99",  # Deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # Explicit VR big endian (retired, still met)
)


def get_contexts(sop_classes: Iterable[str]) -> list[PresentationContext] | None:
    """Storage contexts for a C-GET of instances of `sop_classes`: per class one uncompressed
    context and one per compressed syntax, as many as fit in 127. None when the classes are
    unknown or too many (the net layer's default set is used then)."""
    listed = set(sop_classes)
    classes = sorted(listed - {""})
    if not classes or "" in listed or len(classes) * 2 > MAX_REQUESTED_CONTEXTS - 1:
        return None  # an instance of an unknown class must not go without a context
    per_class = (MAX_REQUESTED_CONTEXTS - 1) // len(classes) - 1
    pairs = [(c, ts) for c in classes for ts in GET_SYNTAXES[:per_class]]
    return contexts_for(pairs)
