"""What to do with one element: the table's action under the options in use and the site profile.

`Options` holds the ten option flags; `SiteProfile` the overrides of a `--profile FILE` (TOML);
`Policy` combines them with the table into one decision per tag (cached: a run meets the same
few hundred tags in every file).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path

from pacsctl.anonymize.choices import BurnedIn
from pacsctl.anonymize.table import Action, Option, Row, Table, load_table
from pacsctl.errors import UsageError


@dataclass(frozen=True)
class Options:
    """The table's options as flags (each one a column of Table E.1-1, its field named like
    the `Option` member), and `--burned-in`."""

    keep_dates: bool = False
    shift_dates: bool = False
    keep_uids: bool = False
    keep_device: bool = False
    keep_institution: bool = False
    keep_patient_characteristics: bool = False
    clean_descriptors: bool = False
    keep_safe_private: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    burned_in: BurnedIn = BurnedIn.REFUSE

    def __post_init__(self) -> None:
        if self.keep_dates and self.shift_dates:
            raise UsageError(
                "--keep-dates and --shift-dates exclude each other",
                hint="keep the dates as they are, or shift them per patient: one of the two",
            )

    def enabled(self) -> tuple[Option, ...]:
        """The options in use, in the table's column order."""
        return tuple(option for option in Option if getattr(self, option.name.lower()))


class OverrideAction(StrEnum):
    """What a site profile says about one attribute."""

    KEEP = "keep"
    REMOVE = "remove"
    REPLACE = "replace"


@dataclass(frozen=True)
class Override:
    """One rule of a site profile: `tag` is kept, removed or replaced with `value`."""

    tag: int
    action: OverrideAction
    value: str | None = None

    @property
    def label(self) -> str:
        """`keep StudyDescription`: how DeidentificationMethod lists it (never the value, which
        may be anything the site chose)."""
        from pydicom.datadict import keyword_for_tag

        return f"{self.action.value} {keyword_for_tag(self.tag) or _tag_text(self.tag)}"


@dataclass(frozen=True)
class SiteProfile:
    """A site's rules over the table (`--profile FILE`): a name and per-attribute overrides.

    TOML::

        name = "trial ABC"                       # optional, goes into DeidentificationMethod
        keep = ["StudyDescription", "(0018,1030)"]
        remove = ["ImageComments"]
        [replace]
        InstitutionName = "Site 7"
    """

    name: str = ""
    overrides: dict[int, Override] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> SiteProfile:
        """Read a profile file; a usage error (naming the entry) when it is wrong."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read the profile {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"the profile {path} is not valid TOML: {exc}") from None
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: dict, source: str = "the profile") -> SiteProfile:
        """A profile from parsed TOML (a dict of `name`, `keep`, `remove`, `replace`)."""
        unknown = set(data) - {"name", "keep", "remove", "replace"}
        if unknown:
            raise UsageError(
                f"{source}: unknown entry {sorted(unknown)[0]!r}",
                hint="a profile has `name`, `keep = [...]`, `remove = [...]` and a [replace] table",
            )
        overrides: dict[int, Override] = {}

        def add(name: str, action: OverrideAction, value: str | None = None) -> None:
            tag = parse_tag(str(name), source)
            if tag in overrides:
                raise UsageError(f"{source}: {name} is given more than one rule")
            overrides[tag] = Override(tag, action, value)

        for action, entry in ((OverrideAction.KEEP, "keep"), (OverrideAction.REMOVE, "remove")):
            names = data.get(entry, [])
            if not isinstance(names, list):
                raise UsageError(f"{source}: `{entry}` must be a list of keywords or tags")
            for name in names:
                add(name, action)
        replace = data.get("replace", {})
        if not isinstance(replace, dict):
            raise UsageError(f"{source}: `replace` must be a table of keyword = value")
        for name, value in replace.items():
            add(name, OverrideAction.REPLACE, str(value))
        return cls(str(data.get("name", "")), overrides)


_TAG = re.compile(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?")


def parse_tag(text: str, source: str = "the profile") -> int:
    """A keyword (`StudyDescription`) or a tag (`(0008,1030)`, `00081030`) as an int."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(text)
    if tag is not None:
        return int(tag)
    match = _TAG.fullmatch(text.strip())
    if match:
        return int(match.group(1) + match.group(2), 16)
    raise UsageError(
        f"{source}: {text!r} is neither a DICOM keyword nor a tag",
        hint="write keywords as pydicom spells them (StudyDescription) or tags as (0008,1030)",
    )


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# UI attributes that the 2024b table does not list yet name instances or frames of reference
# (new in later editions, or missed): left alone, they would leak the original UID and break
# references. Every other UI attribute outside the table names a class, a syntax or a scheme.
UNLISTED_INSTANCE_UIDS = frozenset(
    {
        "RTVCommunicationSOPInstanceUID",
        "PrivateRecordUID",
        "MultiFrameSourceSOPInstanceUID",
        "RadiopharmaceuticalAdministrationEventUID",
        "TargetFrameOfReferenceUID",
        "SOPInstanceUIDOfConcatenationSource",
        "VolumeFrameOfReferenceUID",
        "TableFrameOfReferenceUID",
        "ReferencedColorPaletteInstanceUID",
        "AssertionUID",
        "ReferencedAssertionUID",
        "ModelGroupUID",
        "ReferencedFiducialUID",
        "VolumetricPresentationInputSetUID",
        "TableTopPositionAlignmentUID",
        "EquipmentFrameOfReferenceUID",
        "SegmentationTemplateUID",
    }
)


@cache
def _unlisted_uid_tags() -> frozenset[int]:
    # pydicom loads only when a run needs it: the CLI imports this module (BurnedIn) at start-up.
    from pydicom.datadict import tag_for_keyword

    return frozenset(int(tag_for_keyword(k) or 0) for k in UNLISTED_INSTANCE_UIDS)


@dataclass(frozen=True)
class Decision:
    """What to do with one element: an action, and for a site's replacement its value."""

    action: Action
    value: str | None = None
    row: Row | None = None
    override: bool = False


_KEEP = Decision(Action.KEEP)


class Policy:
    """The decision for each tag under a set of options and a site profile."""

    def __init__(self, options: Options, profile: SiteProfile | None = None, table: Table | None = None):
        self.options = options
        self.profile = profile or SiteProfile()
        self.table = table or load_table()
        self._enabled = options.enabled()
        self._cache: dict[int, Decision] = {}

    def decide(self, tag: int) -> Decision:
        """The decision for `tag` (VR-independent; the caller applies it to the element)."""
        found = self._cache.get(tag)
        if found is None:
            found = self._cache[tag] = self._decide(tag)
        return found

    def _decide(self, tag: int) -> Decision:
        override = self.profile.overrides.get(tag)
        row = self.table.row_for(tag)
        if override is not None:
            action = {
                OverrideAction.KEEP: Action.KEEP,
                OverrideAction.REMOVE: Action.REMOVE,
                OverrideAction.REPLACE: Action.DUMMY,
            }[override.action]
            return Decision(action, override.value, row, override=True)
        if row is None:
            if tag in _unlisted_uid_tags():
                return Decision(Action.KEEP if self.options.keep_uids else Action.UID)
            return _KEEP
        return Decision(self.row_action(row), None, row)

    def row_action(self, row: Row) -> Action:
        """A row's action under the options: the options in use loosen the Basic Profile (keep
        beats clean where two options set one), a compound code takes its last alternative."""
        chosen = [row.options[o] for o in self._enabled if o in row.options]
        if Action.KEEP in chosen:
            return Action.KEEP
        if chosen:
            return chosen[0]
        return resolve_compound(row.basic)


def resolve_compound(alternatives: tuple[Action, ...]) -> Action:
    """The action of a compound code (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) when the attribute's Type in
    its IOD is not known: the last alternative, the one valid for every Type the attribute has
    (a Type 1 attribute needs D, a Type 2 one at least Z). Each alternative removes the
    original value, so the choice costs no privacy, only keeps the output valid."""
    return alternatives[-1]
