"""File names of a folder export: a template over index fields, every component made safe for
all common file systems, length budgets, and collisions resolved the same way on every run.

    {PatientID}/{StudyDate}_{AccessionNumber}/{SeriesNumber:03}_{SeriesDescription}/{InstanceNumber:05}.dcm

Safe means: no `/ \\ : * ? " < > |` or control characters, no trailing dots or spaces, no
Windows reserved device names (CON, NUL, COM1...), no `.`/`..`, at most `COMPONENT_BUDGET`
UTF-8 bytes per component and `PATH_BUDGET` characters per path (Windows' 260 less room for the
folder the export lands in). Two different patients, studies, series or instances whose names
come out the same (ignoring case: NTFS, FAT and APFS ignore it) are told apart by a short hash
of their UID, whichever is met first.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pacsctl.dicom.attributes import INSTANCE_FIELDS, PATIENT_FIELDS, SERIES_FIELDS, STUDY_FIELDS
from pacsctl.errors import UsageError
from pacsctl.export.formats import DEFAULT_LAYOUT

COMPONENT_BUDGET = 64  # UTF-8 bytes; ext4/XFS allow 255, but long names help no one on a CD or in a zip
PATH_BUDGET = 200  # characters of the relative path
MISSING = "unknown"  # a component whose fields are all empty

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789¹²³"]
)
# Which level a field belongs to: a component names the deepest level it uses, and collisions
# are resolved between different UIDs of that level.
_LEVELS = (
    ("PatientID", PATIENT_FIELDS),
    ("StudyInstanceUID", STUDY_FIELDS),
    ("SeriesInstanceUID", SERIES_FIELDS),
    ("SOPInstanceUID", (*INSTANCE_FIELDS, "NumberOfFrames")),
)
FIELDS = frozenset(f for _, fields in _LEVELS for f in fields) - {"path", "size", "sha256"}


def sanitize(text: str, budget: int = COMPONENT_BUDGET) -> str:
    """`text` as one path component every common file system takes (see the module docstring);
    never empty. An extension (after the last dot, up to 5 characters) survives a cut."""
    text = unicodedata.normalize("NFC", text)
    text = _UNSAFE.sub("_", text).strip(" ")
    text = text.rstrip(". ")
    if text in ("", ".", ".."):
        return "_"
    stem, dot, ext = text.rpartition(".")
    if not dot or not 1 <= len(ext) <= 5:
        stem, ext = text, ""
    if stem.split(".")[0].upper().rstrip(" ") in _RESERVED:
        stem = "_" + stem
    suffix = f".{ext}" if ext else ""
    room = budget - len(suffix.encode())
    cut = _cut_utf8(stem, room).rstrip(". ")
    return (cut or "_") + suffix


def _cut_utf8(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: max(limit, 1)].decode("utf-8", errors="ignore")


@dataclass(frozen=True)
class _Component:
    template: str
    level_key: str  # the UID naming what this component stands for


class Layout:
    """A compiled folder template; `path_of(record)` gives each instance record its relative
    path, the same one on every run over the same records."""

    def __init__(self, template: str = DEFAULT_LAYOUT) -> None:
        parts = [p for p in template.replace("\\", "/").split("/") if p]
        if not parts:
            raise UsageError("the layout is empty", hint=f"e.g. --layout '{DEFAULT_LAYOUT}'")
        self.template = "/".join(parts)
        self._components = [self._compile(part) for part in parts]
        # names taken in each folder (case-folded) -> the UID that took it
        self._taken: dict[tuple[str, str], str] = {}
        self._given: dict[tuple[str, str, str], str] = {}

    @staticmethod
    def _compile(part: str) -> _Component:
        depth = -1
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(part) if f is not None]
        except ValueError as exc:
            raise UsageError(f"layout component {part!r}: {exc}") from None
        for name in fields:
            if name not in FIELDS:
                raise UsageError(
                    f"layout field {{{name}}} is not an index field",
                    hint="use: " + ", ".join(sorted(FIELDS)),
                )
            depth = max(depth, next(i for i, (_, level) in enumerate(_LEVELS) if name in level))
        return _Component(part, _LEVELS[max(depth, 0)][0])

    def path_of(self, record: Mapping[str, Any]) -> str:
        """The relative path (with `/`) of the instance `record` (an index instance record, study
        fields merged in) in the export."""
        folder = ""
        last = len(self._components) - 1
        for i, component in enumerate(self._components):
            owner = str(record.get(component.level_key, ""))
            if i == last:
                owner = str(record.get("SOPInstanceUID", ""))  # the file names one instance
            budget = max(8, min(COMPONENT_BUDGET, (PATH_BUDGET - len(folder)) // (len(self._components) - i)))
            name = self._name(folder, sanitize(_render(component.template, record), budget), owner)
            folder = f"{folder}/{name}" if folder else name
        return folder

    def _name(self, folder: str, name: str, owner: str) -> str:
        """`name` in `folder`, or `name~hash` when another UID took it (case ignored)."""
        given = self._given.get((folder, owner, name))
        if given is not None:
            return given
        chosen = name
        key = (folder, chosen.casefold())
        if self._taken.setdefault(key, owner) != owner:
            stem, dot, ext = name.rpartition(".")
            stem, ext = (stem, f".{ext}") if dot and len(ext) <= 5 else (name, "")
            tag = hashlib.sha256(owner.encode()).hexdigest()[:8]
            chosen = f"{_cut_utf8(stem, COMPONENT_BUDGET - 9 - len(ext))}~{tag}{ext}"
            n = 1
            while self._taken.setdefault((folder, chosen.casefold()), owner) != owner:
                n += 1  # two UIDs whose hashes start alike: vanishingly rare, still deterministic
                chosen = f"{stem}~{tag}{n}{ext}"
        self._given[(folder, owner, name)] = chosen
        return chosen


class _Blank(string.Formatter):
    """Formats a component from a record: an empty or missing value is empty text, and a format
    spec the value cannot take (`:03` on a text SeriesNumber) falls back to the plain value."""

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        value = kwargs.get(key, "") if isinstance(key, str) else ""
        return "" if value is None else value

    def format_field(self, value: Any, format_spec: str) -> str:
        if value == "":
            return ""
        try:
            return format(value, format_spec)
        except (TypeError, ValueError):
            return str(value)


_FORMATTER = _Blank()


def _render(template: str, record: Mapping[str, Any]) -> str:
    """The component's text; `MISSING` (keeping a literal extension) when it names fields and
    every one of them is empty, so no folder is called `_` or a file `.dcm`."""
    parsed = list(string.Formatter().parse(template))
    names = [f for _, f, _, _ in parsed if f]
    if names and all(record.get(f) in (None, "") for f in names):
        tail = parsed[-1][0] if parsed[-1][1] is None else ""
        return MISSING + (tail[tail.rindex(".") :] if "." in tail else "")
    return _FORMATTER.format(template, **record)
