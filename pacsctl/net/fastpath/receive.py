"""Where and how pynetdicom streams a received C-STORE data set to disk.

With `STORE_RECV_CHUNKED_DATASET`, pynetdicom's DIMSE decoder creates a `NamedTemporaryFile`
(default temp dir), writes a preamble and a File Meta group built with pydicom, then appends
every data set fragment, flushing after each. Measured here per instance, on the critical path
between the command and the data set: temp file 0.29 ms, `create_file_meta` 0.12 ms,
`write_file_meta_info` 0.42 ms. This module swaps those three names in
`pynetdicom.dimse_messages` for:

- an unbuffered file created with O_EXCL in a directory we choose (the archive's tmp/, same
  file system, so the archive can link the file into place instead of copying it);
- a File Meta group encoded directly (explicit VR little endian; the same elements and values
  pynetdicom writes).

`open_stream` makes the same file, head written, for the C-STOREs `faststore` serves itself.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom import dimse_messages as _dimse_messages

from pacsctl.net.fastpath import encoding, storersp
from pacsctl.net.fastpath.commandset import CommandSet, NotPlain, decode_elements

FILE_MODE = 0o600

_temp_dir: str | None = None


def set_temp_dir(path: Path | None) -> None:
    """Stream received data sets into `path` (None: the process's default temp dir)."""
    global _temp_dir
    _temp_dir = str(path) if path is not None else None


class _StreamFile:
    """The subset of a NamedTemporaryFile pynetdicom uses: write, file.flush, name, close.

    A failed create or write (disk full) must not reach pynetdicom's state machine, which
    would abort the association: the first error is kept in `error`, later fragments are
    dropped, and the store handler answers the C-STORE with a failure status instead."""

    def __init__(self, directory: str) -> None:
        self.error: OSError | None = None
        self.file: Any = None
        while True:
            # The pid tells `verify` a transfer in progress from the leftover of a killed node.
            name = os.path.join(directory, f".incoming-{os.getpid()}-{secrets.token_hex(8)}.dcm")
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            except FileExistsError:
                continue
            except OSError as exc:
                self.error = exc
            else:
                self.file = open(fd, "wb", buffering=0)  # unbuffered: pynetdicom's flush is a no-op
            break
        self.name = name
        if self.file is None:
            self.file = _NoFile()

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        total = len(view)
        try:
            while view and self.error is None:
                view = view[self.file.write(view) :]
        except OSError as exc:
            self.error = exc
        return total

    def close(self) -> None:
        self.file.close()

    @property
    def closed(self) -> bool:
        return self.file.closed


class _NoFile:
    """Stands in for a file that could not be created."""

    closed = True

    def write(self, data: Any) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def stream_error(stream: Any) -> OSError | None:
    """The error that kept a received data set from being written whole, if any."""
    return getattr(stream, "error", None)


def _temp_file(*args: Any, **kwargs: Any) -> _StreamFile:
    return _StreamFile(_temp_dir or tempfile.gettempdir())


def open_stream(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> _StreamFile:
    """A file for a data set about to arrive, holding what pynetdicom would have written first
    (preamble, DICM, File Meta group); `data_offset` says where the data set starts."""
    stream = _temp_file()
    head = (
        b"\x00" * 128
        + b"DICM"
        + encode_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax, _peer_aet())
    )
    stream.write(head)
    stream.data_offset = len(head)  # type: ignore[attr-defined]
    return stream


class _Meta(NamedTuple):
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    source_aet: str = ""


def _create_file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, **_: Any) -> _Meta:
    return _Meta(str(sop_class_uid), str(sop_instance_uid), str(transfer_syntax), _peer_aet())


def _peer_aet() -> str:
    """The AE title of the node sending the data set being received. pynetdicom decodes it in
    the association's DUL thread, which knows its association."""
    assoc = getattr(threading.current_thread(), "assoc", None)
    try:
        peer = assoc.acceptor if assoc.is_requestor else assoc.requestor  # type: ignore[union-attr]
        return str(peer.ae_title or "").strip()
    except AttributeError:
        return ""


def encode_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, source_aet: str = ""
) -> bytes:
    """File Meta Information group 0002 (explicit VR little endian), group length first; with
    `source_aet`, the sender's AE title (0002,0016), so each file says where it came from.
    A UID that is not one (a malformed request's, refused once the data set is in) is written
    empty, so the file can still be written and removed."""

    def ui(elem: int, uid: str) -> bytes:
        return encoding.element(0x0002, elem, encoding.uid_value(uid if encoding.is_uid(uid) else ""), b"UI")

    elements = [
        encoding.element(0x0002, 0x0001, b"\x00\x01", b"OB"),
        ui(0x0002, sop_class_uid),
        ui(0x0003, sop_instance_uid),
        ui(0x0010, transfer_syntax),
        ui(0x0012, PYNETDICOM_IMPLEMENTATION_UID),
        encoding.element(0x0002, 0x0013, encoding.text_value(PYNETDICOM_IMPLEMENTATION_VERSION), b"SH"),
    ]
    if source_aet:
        elements.append(encoding.element(0x0002, 0x0016, encoding.text_value(source_aet, 16), b"AE"))
    return encoding.group(0x0002, elements, explicit=True)


def _write_file_meta_info(fp: Any, meta: Any, enforce_standard: bool = True) -> None:
    if isinstance(meta, _Meta):
        fp.write(encode_file_meta(*meta))
    else:  # anything else pynetdicom might pass: pydicom's writer
        _pydicom_write_file_meta_info(fp, meta, enforce_standard)


_pydicom_write_file_meta_info = _dimse_messages.write_file_meta_info

# -- C-STORE-RQ command sets ----------------------------------------------------------------------
# pynetdicom decodes every command set with pydicom (element objects, UID validation) before it
# even knows the message type. A C-STORE-RQ command set holds a handful of fixed elements:
# decode those directly; anything else (other commands, unexpected elements) goes to pydicom.


# tag -> (keyword, kind); kind: "US", "UI", "AE" or "UL"
_C_STORE_RQ_ELEMENTS = {
    0x00000000: ("CommandGroupLength", "UL"),
    0x00000002: ("AffectedSOPClassUID", "UI"),
    0x00000100: ("CommandField", "US"),
    0x00000110: ("MessageID", "US"),
    0x00000700: ("Priority", "US"),
    0x00000800: ("CommandDataSetType", "US"),
    0x00001000: ("AffectedSOPInstanceUID", "UI"),
    0x00001030: ("MoveOriginatorApplicationEntityTitle", "AE"),
    0x00001031: ("MoveOriginatorMessageID", "US"),
}
_REQUIRED = frozenset({0x00000002, 0x00000100, 0x00000110, 0x00000700, 0x00000800, 0x00001000})
# What a command needs to be answered at all (a response names the message it answers).
_REQUIRED_TO_ANSWER = frozenset({0x00000100, 0x00000110, 0x00000800})
_AFFECTED_UIDS = ("AffectedSOPClassUID", "AffectedSOPInstanceUID")
_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101


class StoreCommand(CommandSet):
    """A decoded C-STORE-RQ command set."""

    @property
    def has_valid_uids(self) -> bool:
        """Whether the Affected SOP Class and Instance UIDs are there and are UIDs."""
        return all(encoding.is_uid(self.get(k)) for k in _AFFECTED_UIDS)


def _read_text(kind: str, value: bytes) -> Any:
    """A UID that is not one makes the command not plain (pydicom's path)."""
    text = value.decode("ascii", "replace")
    if kind != "UI":
        return text.strip()
    uid = text.rstrip("\x00 ").strip()
    if not encoding.is_uid(uid):
        raise NotPlain
    return uid


def _read_text_lenient(kind: str, value: bytes) -> Any:
    """A UID that is not one reads as None (the command is refused with a status)."""
    try:
        return _read_text(kind, value)
    except NotPlain:
        return None


def decode_store_command(raw: bytes, strict: bool = True) -> StoreCommand | None:
    """Decode an implicit VR little endian C-STORE-RQ command set, or None when it is not a
    plain one (the caller then uses pydicom).

    Not `strict`: a command whose Affected SOP Class/Instance UID is missing or not a UID
    (non-ASCII bytes, letters) is decoded too, with None for such a UID, so that it can be
    refused with a status (`has_valid_uids` is False)."""
    if strict:
        elems = decode_elements(raw, _C_STORE_RQ_ELEMENTS, _read_text, _REQUIRED)
    else:
        elems = decode_elements(raw, _C_STORE_RQ_ELEMENTS, _read_text_lenient, _REQUIRED_TO_ANSWER)
    if elems is None:
        return None
    command = StoreCommand(elems)
    if command.CommandField != _C_STORE_RQ:
        return None
    return command


def _decode(bytestring: Any, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> Any:
    if is_implicit_vr and is_little_endian and not deflated:
        raw = bytestring.getvalue()
        fast = decode_store_command(raw)
        if fast is not None:
            return fast
        answer = storersp.decode_store_response(raw)  # the sender's side: its responses
        if answer is not None:
            return answer
    command = _pydicom_decode(bytestring, is_implicit_vr, is_little_endian, deflated)
    if is_implicit_vr and is_little_endian and not deflated:  # a command set
        _blank_bad_store_uids(command)
    return command


def _blank_bad_store_uids(command: Any) -> None:
    """A C-STORE-RQ with a data set whose Affected SOP Class/Instance UID is missing or not a
    UID gets `encoding.PLACEHOLDER_UID` instead: pynetdicom's decoder would fail on it
    (AttributeError, or UnicodeEncodeError writing the File Meta), killing the association's
    thread and leaving its temp file. With it the data set streams like any other, the store
    handler refuses it with a status (`scp`), and pynetdicom removes the file."""
    try:
        if command.get("CommandField") != _C_STORE_RQ or command.get("CommandDataSetType") in (
            None,
            _NO_DATA_SET,
        ):
            return
    except Exception:  # noqa: BLE001 - not ours to judge; pynetdicom reports it
        return
    for keyword in _AFFECTED_UIDS:
        try:
            value = str(command.get(keyword) or "").rstrip("\x00 ").strip()
        except Exception:  # noqa: BLE001 - a value pydicom cannot even decode
            value = ""
        if not encoding.is_uid(value):
            setattr(command, keyword, encoding.PLACEHOLDER_UID)


_pydicom_decode = _dimse_messages.decode


# What `pacsctl.net.fastpath.install` swaps in: (owner, attribute, replacement).
PATCHES = (
    (_dimse_messages, "NamedTemporaryFile", _temp_file),
    (_dimse_messages, "create_file_meta", _create_file_meta),
    (_dimse_messages, "write_file_meta_info", _write_file_meta_info),
    (_dimse_messages, "decode", _decode),
)
